"""Plain-text channels are said once at start (agent and gateway) and by doctor; loopback and unix sockets,
TLS, and brokers without a password are fine."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import pytest

from agent.config.models import AgentConfig
from agent.config.plaintext import agent_plaintext_channels, is_loopback_host
from agent.gateway.config import GatewayConfig, gateway_plaintext_channels
from tests.gateway.test_gateway_cli import StderrLines

EDGE_AGENT = [sys.executable, "-m", "agent.cli.main"]
PASSWORD: dict[str, Any] = {"username": "box1", "password_file": "/etc/edge-agent/credentials/mqtt-password"}


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False),  # every interface
    ("::", False), ("10.0.0.5", False), ("broker.plant.lan", False),  # a name may resolve anywhere
])
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(("mqtt", "escalation", "warned"), [
    # a password in the clear to another host
    ({"url": "mqtt://10.0.0.9:1883", **PASSWORD}, {}, ["mqtt.url mqtt://10.0.0.9:1883 is plain text"]),
    # the same broker on this host, over TLS, or without a password: fine
    ({"url": "mqtt://127.0.0.1:1883", **PASSWORD}, {}, []),
    ({"url": "mqtts://10.0.0.9:8883", **PASSWORD}, {}, []),
    ({"url": "mqtt://10.0.0.9:1883"}, {}, []),
    # frames to a gateway on another host without TLS, in each address form
    ({}, {"gateway": "gpu1.plant.lan:50061"}, ["escalation.gateway gpu1.plant.lan:50061 is plain text"]),
    ({}, {"gateway": "10.0.0.7:50061,10.0.0.8:50061"}, ["escalation.gateway 10.0.0.7:50061,10.0.0.8:50061"]),
    ({}, {"gateway": "dns:///gateways.plant.lan:50061"}, ["escalation.gateway dns:///gateways.plant.lan:50061"]),
    # on this host, a unix socket, or TLS: fine
    ({}, {"gateway": "127.0.0.1:50061"}, []),
    ({}, {"gateway": "unix:/run/edge-agent-gateway/gateway.sock"}, []),
    ({}, {"gateway": "gpu1.plant.lan:50061", "tls": {}}, []),
])
def test_the_agents_plain_text_channels(mqtt: dict[str, Any], escalation: dict[str, Any],
                                        warned: list[str]) -> None:
    config = AgentConfig.model_validate({"mqtt": mqtt, "escalation": escalation})
    warnings = agent_plaintext_channels(config)
    assert len(warnings) == len(warned)
    for warning, start in zip(warnings, warned, strict=True):
        assert warning.startswith(start) and "in the clear" in warning


@pytest.mark.parametrize(("listen", "settings", "warned"), [
    ("0.0.0.0:50061", {"insecure": True}, True),  # every interface, plain text, anonymous
    ("10.0.0.7:50061", {"auth": {"tokens_file": "tokens"}}, True),  # tokens in the clear
    ("0.0.0.0:50061", {"tls": "pem", "insecure": True}, False),  # TLS
    ("127.0.0.1:50061", {}, False),  # loopback
    ("[::1]:50061", {}, False),
    ("unix:/run/edge-agent-gateway/gateway.sock", {}, False),
])
def test_the_gateways_plain_text_port(tmp_path: pathlib.Path, listen: str, settings: dict[str, Any],
                                      warned: bool) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("box1:" + "t" * 32 + "\n")
    tokens.chmod(0o600)
    if "auth" in settings:
        settings = {**settings, "auth": {"tokens_file": tokens}}
    if settings.get("tls") == "pem":
        settings = {**settings, "tls": {"cert_file": tmp_path / "c.pem", "key_file": tmp_path / "k.pem"}}
    warnings = gateway_plaintext_channels(GatewayConfig.model_validate({"listen": listen, **settings}))
    assert bool(warnings) is warned
    assert all(w.startswith(f"listen {listen} is plain text") and "set tls:" in w for w in warnings)


def test_the_agent_warns_once_at_start_and_doctor_says_it(tmp_path: pathlib.Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("pw\n")
    config = tmp_path / "agent.yaml"
    config.write_text("device_id: box1\ncameras:\n  - id: cam\n    source: synthetic://conveyor?seed=1&fps=2\n"
                      f"mqtt:\n  url: mqtt://192.0.2.1:1883\n  username: box1\n  password_file: {secret}\n"
                      "metrics:\n  enabled: false\n")
    proc = subprocess.Popen([*EDGE_AGENT, "run", "--config", str(config)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        stderr = StderrLines(proc)
        stderr.until(r"mqtt.url mqtt://192.0.2.1:1883 is plain text to a broker on another host")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        if proc.stderr is not None:
            proc.stderr.close()
    assert stderr.seen.count("is plain text") == 1
    doctor = subprocess.run([*EDGE_AGENT, "doctor", "--config", str(config), "--timeout", "1"],
                            capture_output=True, text=True, timeout=90)
    assert "plain text" in doctor.stdout and "WARN" in doctor.stdout and "mqtts://" in doctor.stdout


def test_the_gateway_warns_once_at_start(tmp_path: pathlib.Path) -> None:
    from tests.fakes.ollama import FakeOllama

    config = tmp_path / "gateway.yaml"
    with FakeOllama() as fake:
        config.write_text(f"listen: 0.0.0.0:0\ninsecure: true\nollama:\n  host: {fake.url}\n"
                          "metrics:\n  enabled: false\n")
        proc = subprocess.Popen([*EDGE_AGENT, "gateway", "--config", str(config)], stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            stderr = StderrLines(proc)
            stderr.until(r"listening on")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            if proc.stderr is not None:
                proc.stderr.close()
    assert stderr.seen.count("listen 0.0.0.0:0 is plain text on an address other hosts reach") == 1, stderr.seen
