"""``edge-agent doctor``'s ``opcua server`` row: the endpoint and its state (free, served by a running agent's real
asyncua server, taken by another program), and the users file and certificate."""

from __future__ import annotations

import pathlib
import socket

from agent.config.models import AgentConfig, CameraConfig
from agent.config.opcua_server import OpcUaServerConfig
from agent.ops.doctor_opcua import check_opcua_server
from agent.outputs.opcua_server.server import OpcUaServer
from agent.publish.local_broker import free_port
from agent.runtime.service import AgentService

CAMERAS = [CameraConfig(id="belt", source="synthetic://conveyor")]


def config(**opcua: object) -> AgentConfig:
    return AgentConfig(cameras=CAMERAS, opcua_server=OpcUaServerConfig(enabled=True, **opcua))


def test_off_is_skipped_and_a_free_port_is_ok() -> None:
    off = check_opcua_server(AgentConfig(cameras=CAMERAS), 2.0)
    assert (off.status, off.detail) == ("SKIP", "opcua_server.enabled is false: no OPC UA server")
    port = free_port()
    free = check_opcua_server(config(port=port), 2.0)
    assert free.status == "OK", free
    assert free.detail == (f"opc.tcp://127.0.0.1:{port}/edge-agent/: port free (the agent listens there when it "
                           "runs); None; anonymous clients")


def test_a_running_agents_server_is_seen_serving() -> None:
    cfg = config(port=free_port())
    server = OpcUaServer(cfg.opcua_server, AgentService(cfg).snapshot, ["belt"])
    server.start()
    try:
        check = check_opcua_server(cfg, 5.0)
    finally:
        server.stop()
    assert check.status == "OK", check
    assert check.detail.startswith(f"{cfg.opcua_server.endpoint}: serving (edge-agent ")
    assert "urn:edge-agent, endpoints None/None_); None; anonymous clients" in check.detail


def test_another_program_on_the_port_fails() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()  # accepts, never answers: not OPC UA
        port = other.getsockname()[1]
        check = check_opcua_server(config(port=port), 1.0)
    assert check.status == "FAIL", check
    assert check.detail.startswith(f"127.0.0.1:{port} is in use, and not by an OPC UA server (")
    assert check.todo == "stop that program or set opcua_server.port to a free port"


def test_a_bad_users_file_or_certificate_fails(tmp_path: pathlib.Path) -> None:
    users = tmp_path / "users"
    users.write_text("scada:short\n", encoding="utf-8")
    users.chmod(0o600)
    check = check_opcua_server(config(port=free_port(), users_file=users), 1.0)
    assert check.status == "FAIL" and "the password of 'scada' is 5 characters" in check.detail, check
    (tmp_path / "cert.der").write_bytes(b"not a certificate")
    (tmp_path / "key.pem").write_bytes(b"not a key")
    check = check_opcua_server(config(port=free_port(), security={
        "policies": ["Basic256Sha256_Sign"], "cert_file": tmp_path / "cert.der", "key_file": tmp_path / "key.pem"}),
        1.0)
    assert check.status == "FAIL" and check.detail.startswith("opcua_server.security: the certificate or key does "
                                                              "not load"), check
