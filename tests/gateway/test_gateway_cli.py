"""``edge-agent gateway`` as ops run it: a real process, SIGTERM, exit codes, messages not tracebacks."""

from __future__ import annotations

import os
import pathlib
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.wire import escalation_pb2_grpc as pb_grpc
from tests.escalation import samples
from tests.fakes.gateway_fixtures import health_status
from tests.fakes.ollama import FakeOllama

EDGE_AGENT = [sys.executable, "-m", "agent.cli.main"]


class StderrLines:
    """The process's stderr lines, read by a thread (select() cannot see Python's read buffer)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen = ""
        assert proc.stderr is not None
        stream = proc.stderr
        threading.Thread(target=lambda: [self.lines.put(line) for line in stream], daemon=True).start()

    def until(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen += line
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r} in:\n{self.seen}")


def test_the_gateway_serves_until_sigterm_then_exits_0(fake_ollama: FakeOllama, tmp_path: pathlib.Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"listen: 127.0.0.1:0\nollama:\n  host: {fake_ollama.url}\nlogging:\n  level: info\n")
    proc = subprocess.Popen([*EDGE_AGENT, "gateway", "--config", str(config)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        stderr = StderrLines(proc)
        match = stderr.until(r"listening on (127\.0\.0\.1:\d+); Ollama .* model llava:7b; SERVING")
        with grpc.insecure_channel(match.group(1)) as channel:
            assert health_status(channel) == "SERVING"
            assert pb_grpc.EscalationStub(channel).Describe(samples.request(), timeout=10).attempts == 1
        proc.send_signal(signal.SIGTERM)
        stderr.until(r"stopped after 1 call\(s\)")
        assert proc.wait(10) == 0
        assert "stop signal received" in stderr.seen and "Traceback" not in stderr.seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.parametrize(("args", "words"), [
    # a config problem, with its field and line
    (["--config", "{dir}/gateway.yaml"], "ollama.host (line 2)"),
    # no such file
    (["--config", "{dir}/missing.yaml"], "no such config file"),
    # a log level that does not exist
    (["--log-level", "loud"], "--log-level 'loud': expected one of debug, info"),
])
def test_bad_config_and_options_exit_2_with_a_message(tmp_path: pathlib.Path, args: list[str], words: str) -> None:
    (tmp_path / "gateway.yaml").write_text("ollama:\n  host: http://gpu-box\n")
    result = CliRunner().invoke(app, ["gateway", *(a.format(dir=tmp_path) for a in args)])
    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert isinstance(result.exception, SystemExit)  # typer.Exit(2), not an uncaught error


def test_an_address_in_use_exits_2(fake_ollama: FakeOllama) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "EDGE_GATEWAY_LISTEN": f"127.0.0.1:{port}", "EDGE_GATEWAY_OLLAMA__HOST": fake_ollama.url}
        proc = subprocess.run([*EDGE_AGENT, "gateway"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert f"cannot listen on '127.0.0.1:{port}'" in proc.stderr and "Traceback" not in proc.stderr


def test_without_the_ollama_extra_the_gateway_names_the_install_command() -> None:
    # a camera box: edge-agent installed without its `ollama` extra (sys.modules[name] = None hides a package)
    hide = "import sys; sys.modules['ollama'] = None; sys.argv = ['edge-agent', 'gateway']; "
    proc = subprocess.run([sys.executable, "-c", hide + "from agent.cli.main import main; main()"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'edge-agent[ollama]'" in proc.stderr and "ollama is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_modelfile_is_written_without_the_ollama_extra() -> None:
    # any box can write it; `ollama create` runs on the gateway host
    hide = "import sys; sys.modules['ollama'] = None; sys.argv = ['edge-agent', 'gateway-modelfile']; "
    proc = subprocess.run([sys.executable, "-c", hide + "from agent.cli.main import main; main()"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("#") and "FROM llava:7b" in proc.stdout
