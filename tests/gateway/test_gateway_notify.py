"""``edge-agent gateway`` as systemd runs it: a real process with NOTIFY_SOCKET (an abstract socket, as
systemd's own) and WATCHDOG_USEC. READY=1 once it listens, WATCHDOG=1 from its event loop, /metrics and
/healthz (503 once Ollama is gone, while the pings go on), STOPPING=1 on SIGTERM."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

from agent.ops.doctor import ask_gateway_health
from agent.wire import escalation_pb2_grpc as pb_grpc
from tests.escalation import samples
from tests.fakes.ollama import FakeOllama
from tests.health.conftest import NotifyListener


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def test_gateway_ready_watchdog_metrics_stopping(tmp_path: pathlib.Path,
                                                 abstract_notify_socket: tuple[str, NotifyListener]) -> None:
    address, listener = abstract_notify_socket
    fake = FakeOllama(models=("llava:7b", "moondream:latest")).start()
    config = tmp_path / "gateway.yaml"
    config.write_text(f"listen: 127.0.0.1:0\nollama: {{host: '{fake.url}', connect_timeout_s: 1}}\n"
                      "health_interval_s: 0.2\nmetrics: {listen: '127.0.0.1:0'}\n")
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "600000", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "gateway", "--config", str(config)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        got = listener.wait_for(lambda m: m.get("READY") == "1", 30.0)
        assert got is not None, listener.messages
        ready_at, ready = got
        match = re.search(r"listening on (127\.0\.0\.1:\d+); .*: SERVING; .*metrics (http://127\.0\.0\.1:\d+)/metrics",
                          ready["STATUS"])
        assert match, ready
        target, metrics = match.groups()

        # one call, then the numbers on /metrics
        with grpc.insecure_channel(target) as channel:
            assert pb_grpc.EscalationStub(channel).Describe(samples.request(), timeout=10).attempts == 1
        code, body = get(metrics + "/metrics")
        assert code == 200
        parsed = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for f in text_string_to_metric_families(body.decode()) for s in f.samples}
        assert parsed[("edge_gateway_calls_total", (("code", "OK"),))] == 1
        assert parsed[("edge_gateway_call_duration_seconds_count", ())] == 1
        assert parsed[("edge_gateway_ollama_duration_seconds_count", ())] == 1
        assert parsed[("edge_gateway_serving", ())] == 1
        assert parsed[("edge_gateway_running_calls", ())] == 0 and parsed[("edge_gateway_queue_limit", ())] == 8
        code, body = get(metrics + "/healthz")
        assert code == 200 and json.loads(body)["status"] == "ok"

        # pings every 0.3 s from the event loop
        time.sleep(1.0)
        pings = listener.times("WATCHDOG", "1", start=ready_at)
        assert len(pings) >= 3, listener.messages

        # Ollama goes away: NOT_SERVING with the reason, /healthz 503, and the pings go on (a restart
        # of the gateway would not bring Ollama back)
        fake.stop()
        deadline = time.monotonic() + 10.0
        while (answer := ask_gateway_health(target)).status != "NOT_SERVING" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answer.status == "NOT_SERVING" and "unreachable" in answer.reason, answer
        code, body = get(metrics + "/healthz")
        assert code == 503 and "NOT_SERVING" in json.loads(body)["problems"][0]
        gone_at = time.monotonic()
        assert listener.wait_for(lambda m: m.get("WATCHDOG") == "1", 2.0, after=gone_at)

        proc.send_signal(signal.SIGTERM)
        stopping = listener.wait_for(lambda m: m.get("STOPPING") == "1", 15.0)
        assert stopping is not None and stopping[1]["STATUS"].startswith("stopping")
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
        fake.stop()
