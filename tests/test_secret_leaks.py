"""No credential leaks: a real agent with cameras whose URLs carry credentials in every shape, a real
gateway whose ``ollama.host`` carries a password, a real Mosquitto and the fake Ollama; every output
they produce (both processes' logs, retained status, tag events, /healthz and /metrics of both, gRPC
health metadata and error details, `edge-agent doctor`, the refusal of a camera the agent cannot open)
is collected and searched for the secrets. Each output is also checked to carry the redacted form, so
the test cannot pass because an output was empty."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.publish.local_broker import LocalMosquitto
from agent.wire import escalation_pb2_grpc as pb_grpc
from agent.wire.health import REASON_KEY
from tests.conftest import MqttCollector
from tests.escalation import samples
from tests.fakes.ollama import FakeOllama, Reply
from tests.gateway.test_gateway_cli import StderrLines

EDGE_AGENT = [sys.executable, "-m", "agent.cli.main"]
# each secret is a token of its own, so a hit names the shape that leaked
CAM_USER, DAHUA_PW, FOSCAM_PW, GST_PW, OLLAMA_USER, OLLAMA_PW = (
    "camuserQ7", "dahuaPwZ1", "foscamPwZ2", "gstPwZ3", "ollUserQ8", "ollamaPwZ4")
SECRETS = (CAM_USER, DAHUA_PW, FOSCAM_PW, GST_PW, OLLAMA_USER, OLLAMA_PW)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:  # /healthz answers 503 when unhealthy, with its document
        return str(exc.read().decode("utf-8"))


class Proc:
    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([*EDGE_AGENT, *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.stderr = StderrLines(self.proc)
        self.output: str | None = None

    def stop(self) -> str:
        """SIGTERM, then everything the process wrote (stderr, then stdout)."""
        if self.output is not None:
            return self.output
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        time.sleep(0.2)  # the reader thread drains the pipe
        while not self.stderr.lines.empty():
            self.stderr.seen += self.stderr.lines.get()
        out = self.proc.stdout.read() if self.proc.stdout is not None else ""
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.output = self.stderr.seen + out
        return self.output


@pytest.fixture
def procs() -> Iterator[Callable[[list[str]], Proc]]:
    started: list[Proc] = []

    def start(args: list[str]) -> Proc:
        started.append(Proc(args))
        return started[-1]

    yield start
    for p in started:
        p.stop()


@pytest.mark.timeout(120)
def test_no_output_of_agent_gateway_or_doctor_shows_a_credential(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], tmp_path: pathlib.Path,
        procs: Callable[[list[str]], Proc]) -> None:
    outputs: dict[str, str] = {}
    fake = FakeOllama().start()
    try:
        # the model is listed (health SERVING) but every chat says it is not there: the gateway's error
        # details name Ollama's host, and they travel on into the agents' escalation reasons
        fake.answer_fn = lambda body: Reply(status=404, error='model "llava:7b" not found, try pulling it first')
        gw_config = tmp_path / "gateway.yaml"
        gw_config.write_text(
            f"listen: 127.0.0.1:0\nollama:\n  host: http://{OLLAMA_USER}:{OLLAMA_PW}@127.0.0.1:{fake.port}\n"
            "metrics:\n  listen: 127.0.0.1:0\nlogging:\n  level: debug\n")
        gateway = procs(["gateway", "--config", str(gw_config)])
        started = gateway.stderr.until(r"listening on (127\.0\.0\.1:\d+);.*metrics on (http://\S+)/metrics")
        gw_address, gw_http = started.group(1), started.group(2)

        closed = _closed_port()
        cameras = [
            {"id": "belt", "source": "synthetic://conveyor?seed=11&fps=4&frames=400"},
            {"id": "dahua", "source": f"rtsp://127.0.0.1:{closed}/user={CAM_USER}&password={DAHUA_PW}&channel=1"},
            {"id": "foscam", "source": f"http://127.0.0.1:{closed}/videostream.cgi?loginuse={CAM_USER}"
                                       f"&loginpas={FOSCAM_PW}"},
        ]
        config = {"device_id": "box1", "cameras": cameras,
                  "mqtt": {"url": mosquitto.url, "stats_interval_s": 0},
                  "escalation": {"gateway": gw_address, "rate_per_camera": {"per_minute": 6000, "burst": 100}},
                  "metrics": {"listen": "127.0.0.1:0"}, "logging": {"level": "debug"}}
        agent_yaml = tmp_path / "agent.yaml"
        agent_yaml.write_text(json.dumps(config))  # JSON is YAML
        status = collector(mosquitto.url, "edge/box1/status")
        tags = collector(mosquitto.url, "edge/box1/+/tags")
        agent = procs(["run", "--config", str(agent_yaml)])
        agent_http = agent.stderr.until(r"metrics on (http://\S+)/metrics").group(1)

        # the retained status names both broken cameras with a reason; a tag event carries the gateway's error
        assert status.wait_until(lambda m: all(
            (json.loads(m.payload).get("cameras", {}).get(c) or {}).get("reason") for c in ("dahua", "foscam")),
            timeout=30.0), [m.payload for m in status.messages]
        assert tags.wait_until(lambda m: "FAILED_PRECONDITION" in m.payload.decode(), timeout=40.0), \
            [m.payload for m in tags.messages][-3:]
        outputs["agent /healthz"] = _get(f"{agent_http}/healthz")
        outputs["agent /metrics"] = _get(f"{agent_http}/metrics")
        outputs["gateway /healthz"] = _get(f"{gw_http}/healthz")
        outputs["gateway /metrics"] = _get(f"{gw_http}/metrics")

        # gRPC: the error details of a call, then (model gone) the health reason in the trailing metadata
        with grpc.insecure_channel(gw_address) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.EscalationStub(channel).Describe(samples.request(), timeout=10)
            outputs["gRPC Describe details"] = str(info.value.details())
            fake.remove("llava:7b")
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 20.0
            while True:
                reply, call = health.Check.with_call(health_pb2.HealthCheckRequest(service=""), timeout=5)
                meta = {k: v for k, v in call.trailing_metadata() or ()}
                if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            outputs["gRPC health metadata"] = meta[REASON_KEY].decode("utf-8")

        outputs["agent log"] = agent.stop()
        outputs["gateway log"] = gateway.stop()
        outputs["retained status"] = "\n".join(m.payload.decode() for m in status.messages)
        outputs["tag events"] = "\n".join(m.payload.decode() for m in tags.messages)

        # doctor on a config with every camera shape, the gst pipeline too, and the gateway
        cameras.append({"id": "gst", "source": f"gst:rtspsrc location=rtsp://{CAM_USER}:{GST_PW}@127.0.0.1:{closed}"
                                              "/live latency=0 ! decodebin"})
        agent_yaml.write_text(json.dumps(config))
        doctor = subprocess.run([*EDGE_AGENT, "doctor", "--config", str(agent_yaml), "--timeout", "3"],
                                capture_output=True, text=True, timeout=90)
        outputs["doctor"] = doctor.stdout + doctor.stderr
        # the agent refuses a camera it cannot open at start: the refusal shows the source
        refused = subprocess.run([*EDGE_AGENT, "run", "--config", str(agent_yaml)], capture_output=True, text=True,
                                 timeout=60)
        assert refused.returncode != 0
        outputs["agent refusal"] = refused.stdout + refused.stderr
    finally:
        fake.stop()

    leaks = {name: [s for s in SECRETS if s in text] for name, text in outputs.items()}
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}
    # and every output did show the redacted forms (an empty output would prove nothing)
    expect = {
        "agent log": ["user=***&password=***", "loginpas=***"],
        "gateway log": ["http://***:***@127.0.0.1"],
        "retained status": ["password=***", "loginpas=***"],
        "tag events": ["FAILED_PRECONDITION", "http://***:***@127.0.0.1"],
        "agent /healthz": ["dahua"],
        "agent /metrics": ["edge_agent"],
        "gateway /healthz": ["http://***:***@127.0.0.1"],
        "gateway /metrics": ["http://***:***@127.0.0.1"],
        "gRPC Describe details": ["http://***:***@127.0.0.1"],
        "gRPC health metadata": ["model not available"],  # callers get a public phrase only
        "doctor": ["password=***", "loginpas=***", "rtsp://***:***@127.0.0.1"],
        "agent refusal": ["rtsp://***:***@127.0.0.1"],
    }
    missing = {name: [w for w in words if w not in outputs[name]] for name, words in expect.items()}
    assert not any(missing.values()), {k: (v, outputs[k][-2000:]) for k, v in missing.items() if v}
