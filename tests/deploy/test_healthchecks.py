"""The HEALTHCHECK commands of deploy/containers run as written (exec form, parsed from the file) against a
real gateway and a real agent health endpoint: exit 0 while healthy, non-zero otherwise. The agent's
DaemonSet probes run the same command."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import yaml

from agent.ops.endpoint import MetricsServer
from agent.publish.local_broker import free_port
from tests.fakes.gateway_fixtures import StartGateway

ROOT = pathlib.Path(__file__).resolve().parents[2]


def healthcheck(name: str) -> list[str]:
    """The exec-form CMD of the file's HEALTHCHECK (its continuation lines joined)."""
    text = (ROOT / "deploy" / "containers" / name).read_text(encoding="utf-8").replace("\\\n", " ")
    [line] = [line for line in text.splitlines() if line.startswith("HEALTHCHECK ")]
    command: list[str] = json.loads(line.split(" CMD ", 1)[1])
    return command


def run(command: list[str], **env: str) -> int:
    """The command with this test's Python for the image's `python` (the image's PATH starts with its venv)."""
    assert command[0] == "python"
    result = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=30,
                            check=False, env={**os.environ, **env})
    return result.returncode


def test_the_gateway_healthcheck_follows_the_grpc_health_service(start_gateway: StartGateway) -> None:
    command = healthcheck("gateway.Containerfile")
    serving = start_gateway()
    assert run(command, HEALTHCHECK_PORT=str(serving.port)) == 0
    # a gateway whose only Ollama server is gone says NOT_SERVING: the check fails
    nobody = f"http://127.0.0.1:{free_port()}"
    lost = start_gateway(ollama={"host": nobody})
    assert run(command, HEALTHCHECK_PORT=str(lost.port)) == 1
    assert run(command, HEALTHCHECK_PORT=str(free_port())) != 0  # nothing listening


@pytest.mark.parametrize(("healthy", "code"), [(True, 0), (False, 1)])
def test_the_agent_healthcheck_follows_healthz(healthy: bool, code: int) -> None:
    command = healthcheck("agent.Containerfile")
    doc: dict[str, Any] = {"healthy": healthy}
    server = MetricsServer("127.0.0.1:0", metrics=lambda: "", health=lambda: (healthy, doc))
    server.start()
    try:
        port = server.address[1]
        assert "127.0.0.1:9464/healthz" in command[-1]  # metrics.listen's default, inside the container
        assert run([*command[:-1], command[-1].replace(":9464/", f":{port}/")]) == code
    finally:
        server.stop()


def test_the_daemonset_probes_run_the_images_healthcheck() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "agent.yaml").read_text(encoding="utf-8")))
    [daemonset] = [d for d in docs if d and d["kind"] == "DaemonSet"]
    [container] = daemonset["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == healthcheck("agent.Containerfile")
