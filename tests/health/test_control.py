"""Reaching a running agent (agent.ops.control): its pid file, the checks before signalling a pid, the
/healthz URL and probe (a real HTTP endpoint), and reading a reload's outcome from it."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.config.models import MetricsConfig
from agent.errors import EdgeAgentError
from agent.ops.control import (
    PID_FILE_NAME,
    HealthProbe,
    HealthSnapshot,
    SystemdReload,
    find_agent_pid,
    health_url,
    remove_pid_file,
    wait_for_model,
    write_pid_file,
)
from agent.ops.endpoint import MetricsServer


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not an agent."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def test_the_pid_file_names_this_process_and_goes_away_only_if_it_still_does(tmp_path: pathlib.Path) -> None:
    path = write_pid_file(tmp_path / "state")
    assert path == tmp_path / "state" / PID_FILE_NAME and path.read_text() == f"{os.getpid()}\n"
    path.write_text("12345\n")  # another agent started since
    remove_pid_file(path)
    assert path.exists()
    path.write_text(f"{os.getpid()}\n")
    remove_pid_file(path)
    assert not path.exists()
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert write_pid_file(blocked) is None  # cannot: a warning, and the agent runs on


def test_a_pid_file_is_checked_before_anyone_is_signalled(tmp_path: pathlib.Path,
                                                          sleeper: subprocess.Popen[bytes]) -> None:
    env = {"STATE_DIRECTORY": str(tmp_path)}
    with pytest.raises(EdgeAgentError, match=f"no running agent found: no pid file at {tmp_path / PID_FILE_NAME} or "
                                             "/var/lib/edge-agent/edge-agent.pid"):
        find_agent_pid(None, env)
    pid_file = tmp_path / PID_FILE_NAME
    pid_file.write_text("not a pid\n")
    with pytest.raises(EdgeAgentError, match="expected the agent's pid, one number"):
        find_agent_pid(None, env)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    pid_file.write_text(f"{gone.pid}\n")
    with pytest.raises(EdgeAgentError, match=f"no process {gone.pid} is running; is the agent running?"):
        find_agent_pid(None, env)
    pid_file.write_text(f"{sleeper.pid}\n")  # alive, but not `edge-agent run`: a stale file, a reused pid
    with pytest.raises(EdgeAgentError, match=f"process {sleeper.pid} is not `edge-agent run`"):
        find_agent_pid(None, env)
    assert sleeper.poll() is None  # and it was not signalled


def test_a_pid_file_of_an_agent_process_is_taken(tmp_path: pathlib.Path) -> None:
    # the agent's command line as `python -m agent.cli.main run --config ...` shows it in /proc
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "agent.cli.main", "run"])
    try:
        # until the child has exec'd, /proc shows the forked pytest's command line (seen under load)
        cmdline = pathlib.Path(f"/proc/{proc.pid}/cmdline")
        deadline = time.monotonic() + 10.0
        while cmdline.exists() and b"agent.cli.main" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        given = tmp_path / "agent.pid"
        given.write_text(f"{proc.pid}\n")
        assert find_agent_pid(given, {}) == (proc.pid, f"pid file {given}")
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.parametrize(("metrics", "url", "why"), [
    (MetricsConfig(), "http://127.0.0.1:9464/healthz", ""),  # the default
    (MetricsConfig(listen="0.0.0.0:9500"), "http://127.0.0.1:9500/healthz", ""),  # all interfaces: ask loopback
    (MetricsConfig(listen="[::]:9500"), "http://[::1]:9500/healthz", ""),
    (MetricsConfig(enabled=False), None, "metrics endpoint is off"),
    (MetricsConfig(listen="127.0.0.1:0"), None, "picks a random port; give --health URL"),
])
def test_health_url(metrics: MetricsConfig, url: str | None, why: str) -> None:
    got, reason = health_url(metrics)
    assert got == url and why in reason


def test_the_probe_reads_a_real_endpoint_healthy_or_not() -> None:
    state: dict[str, Any] = {"healthy": True, "doc": {"status": "ok", "model": {"id": "detector@abc"},
                                                      "last_reload": "config reloaded at 10:00:00: no change"}}
    server = MetricsServer("127.0.0.1:0", metrics=lambda: "", health=lambda: (state["healthy"], state["doc"]))
    server.start()
    try:
        probe = HealthProbe(server.url + "/healthz")
        assert probe.read() == HealthSnapshot("detector@abc", "config reloaded at 10:00:00: no change")
        state.update(healthy=False, doc={"status": "unhealthy", "model": {"id": "detector@abc"}})
        assert probe.read() == HealthSnapshot("detector@abc", None)  # 503 still carries the document
        assert HealthProbe(server.url + "/metrics").read() is None  # not JSON
    finally:
        server.stop()
    assert probe.read() is None  # nobody listens


class Script:
    """A probe answering from a list, and a clock that advances one second per poll."""

    def __init__(self, answers: list[HealthSnapshot | None]) -> None:
        self.answers = answers
        self.t = 0.0

    def probe(self) -> HealthSnapshot | None:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def clock(self) -> float:
        return self.t

    def sleep(self, _s: float) -> None:
        self.t += 1.0


BEFORE = HealthSnapshot("m@old", "config reloaded at 10:00:00: no change")


@pytest.mark.parametrize(("answers", "state", "detail"), [
    # still loading for two polls, then the new model
    ([BEFORE, BEFORE, HealthSnapshot("m@new", "config reloaded at 10:01:00: model file changed on disk, reloaded")],
     "confirmed", "the agent runs m@new"),
    # the agent refused: its note changes and says so
    ([BEFORE, HealthSnapshot("m@old", "reload at 10:01:00 refused, running the previous config: cameras[1]...")],
     "refused", "the agent refused the reload: reload at 10:01:00 refused"),
    # it reloaded into something else (its config changed meanwhile)
    ([HealthSnapshot("m@third", "config reloaded at 10:01:00: applied: model.path")], "other_model",
     "runs m@third, not m@new"),
    # no answer at all, then an agent that never reloads
    ([None], "timeout", "no reload seen within 5 s (no answer from /healthz)"),
    ([BEFORE], "timeout", "it still runs m@old"),
])
def test_reading_the_outcome_of_a_reload(answers: list[HealthSnapshot | None], state: str, detail: str) -> None:
    script = Script(list(answers))
    outcome = wait_for_model(script.probe, "m@new", BEFORE, 5.0, clock=script.clock, sleep=script.sleep)
    assert outcome.state == state and detail in outcome.detail
    assert outcome.ok is (state == "confirmed")


def test_systemctl_reload_reports_its_failure() -> None:
    # here: no systemctl, or no such unit; either way the error names the command and why
    request = SystemdReload("edge-agent-no-such-unit")
    assert request.describe() == "systemctl reload edge-agent-no-such-unit"
    with pytest.raises(EdgeAgentError, match="systemctl reload edge-agent-no-such-unit (failed|exited)"):
        request.send()
