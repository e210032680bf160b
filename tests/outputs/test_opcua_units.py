"""The OPC UA server's parts without the whole agent: the config's errors, the users file, the pure node map,
and a port in use at start (a real asyncua server, a real socket)."""

from __future__ import annotations

import dataclasses
import pathlib
import socket
import threading
import time

import pytest

from agent.config.loader import check_config
from agent.config.models import AgentConfig, CameraConfig
from agent.config.opcua_server import OpcUaServerConfig
from agent.config.taxonomy import load_taxonomy
from agent.core.event import EscalationOutcome
from agent.core.ports import Published
from agent.errors import OpcUaServerError
from agent.outputs.opcua_server import nodemap
from agent.outputs.opcua_server.server import OpcUaServer
from agent.outputs.opcua_server.users import UserTable
from agent.publish.local_broker import free_port
from agent.runtime.service import AgentService
from tests.conftest import make_event
from tests.outputs.conftest import running

BAD_CONFIGS = {
    # a port out of range
    "port": ("opcua_server: {enabled: true, port: 70000}\n", "opcua_server.port (line 2): Input should be less than "
             "or equal to 65535 (got 70000)"),
    # a security policy OPC UA's asyncua offers but we do not (or a typo)
    "policy": ("opcua_server:\n  enabled: true\n  security: {policies: [Basic128Rsa15_Sign]}\n",
               "opcua_server.security.policies[0] (line 4): Input should be 'None', 'Basic256Sha256_Sign' or "
               "'Basic256Sha256_SignAndEncrypt'"),
    # every interface, no users, no signing
    "exposed": ("opcua_server: {enabled: true, host: 0.0.0.0}\n", "host '0.0.0.0' is reachable from other hosts, "
                "but the server lacks users_file (anonymous clients refused) and security.policies without None"),
    # a signed policy without the server's certificate
    "no cert": ("opcua_server:\n  enabled: true\n  security: {policies: [None, Basic256Sha256_Sign]}\n",
                "policies Basic256Sha256_Sign sign the messages and need the server's certificate: set cert_file "
                "and key_file"),
    # a host that is not one
    "host": ("opcua_server: {enabled: true, host: 'opc.tcp://box'}\n", "'opc.tcp://box' is not a host"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_opcua_config_names_the_field_and_what_was_expected(case: str, tmp_path: pathlib.Path) -> None:
    text, expected = BAD_CONFIGS[case]
    path = tmp_path / "agent.yaml"
    path.write_text("cameras: [{id: belt, source: 'synthetic://conveyor'}]\n" + text, encoding="utf-8")
    problems = check_config(path)
    assert any(expected in p for p in problems), problems


def test_exposed_but_secured_or_said_insecure_is_accepted(tmp_path: pathlib.Path) -> None:
    secured = OpcUaServerConfig(enabled=True, host="0.0.0.0", users_file=tmp_path / "users", security={
        "policies": ["Basic256Sha256_SignAndEncrypt"], "cert_file": tmp_path / "c.der", "key_file": tmp_path / "k"})
    assert secured.endpoint == f"opc.tcp://{socket.gethostname()}:4840/edge-agent/"
    assert OpcUaServerConfig(enabled=True, host="0.0.0.0", insecure=True, endpoint_host="line3-box1").endpoint == \
        "opc.tcp://line3-box1:4840/edge-agent/"
    assert OpcUaServerConfig(enabled=True, host="::1", port=4841).endpoint == "opc.tcp://[::1]:4841/edge-agent/"
    assert OpcUaServerConfig(enabled=False, host="0.0.0.0").enabled is False  # off: nothing listens


USERS = {
    # world-readable: refused with the chmod to run
    "mode": ("scada:correct-horse-battery\n", 0o644, "is readable by every user (mode 0644); run `chmod 600"),
    # no colon
    "line": ("scada correct-horse-battery\n", 0o600, "line 1: expected USER:PASSWORD"),
    # short password
    "short": ("# users\nscada:short\n", 0o600, "line 2: the password of 'scada' is 5 characters; expected at least 12"),
    # the same user twice
    "twice": ("scada:correct-horse-battery\nscada:correct-horse-staple\n", 0o600, "user 'scada' is listed twice"),
    # nothing in it
    "empty": ("# nobody\n", 0o600, "lists no user"),
}


@pytest.mark.parametrize("case", sorted(USERS))
def test_a_bad_users_file_says_which_line_and_what_was_expected(case: str, tmp_path: pathlib.Path) -> None:
    text, mode, expected = USERS[case]
    path = tmp_path / "users"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    with pytest.raises(OpcUaServerError, match="opcua_server.users_file") as exc:
        UserTable.from_file(path)
    assert expected in str(exc.value)


def test_the_users_table_checks_name_and_password() -> None:
    table = UserTable({"scada": "correct-horse-battery", "mes": "another-long-password"})
    assert table.check("scada", "correct-horse-battery") and table.check("mes", "another-long-password")
    assert not table.check("scada", "another-long-password")  # another user's password
    assert not table.check("nobody", "correct-horse-battery") and not table.check(None, None)


def test_a_port_in_use_at_start_is_a_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = AgentConfig(cameras=[CameraConfig(id="belt", source="synthetic://conveyor")])
        server = OpcUaServer(OpcUaServerConfig(enabled=True, port=port), AgentService(config).snapshot, ["belt"])
        with pytest.raises(OpcUaServerError) as exc:
            server.start()
        assert str(exc.value) == (f"opcua_server: 127.0.0.1:{port} is already in use (another OPC UA server, or an "
                                  "agent already running); stop that program or set opcua_server.port to a free port")
        assert server.state == "stopped"
        assert [r for r in caplog.records if r.exc_info] == []  # no traceback in the log, only the message


def test_a_certificate_that_does_not_load_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "cert.der").write_bytes(b"not a certificate")
    (tmp_path / "key.pem").write_bytes(b"not a key")
    config = AgentConfig(cameras=[CameraConfig(id="belt", source="synthetic://conveyor")])
    server = OpcUaServer(OpcUaServerConfig(enabled=True, port=free_port(), security={
        "policies": ["Basic256Sha256_Sign"], "cert_file": tmp_path / "cert.der", "key_file": tmp_path / "key.pem"}),
        AgentService(config).snapshot, ["belt"])
    with pytest.raises(OpcUaServerError, match="cannot start the OPC UA server: .*check opcua_server.security"):
        server.start()


def test_a_stuck_server_never_blocks_the_live_path_and_the_latest_value_wins() -> None:
    config = AgentConfig(cameras=[CameraConfig(id="belt", source="synthetic://conveyor")])
    server = OpcUaServer(OpcUaServerConfig(enabled=True, port=free_port()), running(config, "belt"), ["belt"])
    server.start()
    release = threading.Event()
    try:
        loop = server._loop  # the server's asyncio loop: block it, as a stuck client or a slow write would
        assert loop is not None
        loop.call_soon_threadsafe(release.wait)
        for sequence in range(1, 1001):  # every call returns while the server's loop is blocked
            server.on_published(Published(make_event(camera="belt", sequence=sequence, verdict="defect"), 0.0, False))
        assert not release.is_set()
        assert list(server._mailbox) == ["belt"]  # one entry per camera, however many events: bounded
        assert server._mailbox["belt"]["Sequence"] == 1000 and server._mailbox["belt"]["Counters/Defect"] == 1000
        release.set()
        deadline = time.monotonic() + 10
        while server.written("belt", "Sequence") != 1000 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.written("belt", "Sequence") == 1000 and server.written("belt", "Counters/Inspected") == 1000
    finally:
        release.set()
        server.stop()
    assert server.state == "stopped"


def test_event_values_and_the_tally() -> None:
    tally = nodemap.Tally()
    defect = make_event(camera="belt", sequence=7, verdict="defect")
    values = tally.record(Published(defect, 0.001, escalated=False))
    labels = ",".join(dict.fromkeys(t.detection.label for t in defect.decision.tags))
    assert values["Verdict"] == "defect" and values["DefectLabels"] == labels and labels
    assert values["DefectCodes"] == ""  # no taxonomy: no codes
    assert (values["Sequence"], values["EventId"], values["CapturedAt"]) == (7, defect.event_id, defect.captured_at)
    uncertain = make_event(camera="belt", sequence=8, verdict="uncertain",
                           escalation=EscalationOutcome(status="timeout"))
    tally.record(Published(uncertain, 0.001, escalated=True))
    # the VLM's late answer: revision 2 updates the last-event values, the counters stay
    late = dataclasses.replace(uncertain, revision=2, verdict="pass")
    values = tally.record(Published(late, 0.001, escalated=True))
    assert (values["Verdict"], values["Revision"], values["DefectLabels"]) == ("pass", 2, "")
    assert tally.counts("belt") == {"Inspected": 2, "Pass": 0, "Defect": 1, "Uncertain": 1, "Escalated": 1}
    assert {k: v for k, v in values.items() if k.startswith("Counters/")} == {
        "Counters/Inspected": 2, "Counters/Pass": 0, "Counters/Defect": 1, "Counters/Uncertain": 1,
        "Counters/Escalated": 1}
    assert tally.counts("other") == {}


def test_defect_codes_come_from_the_taxonomy(tmp_path: pathlib.Path) -> None:
    event = make_event(camera="belt", verdict="defect")
    label = event.decision.tags[0].detection.label
    path = tmp_path / "taxonomy.yaml"
    path.write_text(f"version: 1\nlabels:\n  - label: CANONICAL\n    code: D-017\n    severity: high\n"
                    f"    synonyms: [{label}]\n", encoding="utf-8")
    values = nodemap.event_values(dataclasses.replace(event, taxonomy=load_taxonomy(path)))
    assert values["DefectCodes"] == "D-017"


def test_node_ids_are_the_browse_paths() -> None:
    assert nodemap.camera_node_id("belt-1.a", "Counters/Pass") == "Cameras/belt-1.a/Counters/Pass"
    assert nodemap.device_node_id("OutboxBacklog") == "Device/OutboxBacklog"
    assert set(nodemap.camera_defaults()) == {s.path for s in nodemap.CAMERA_NODES}
    assert {s.type for s in (*nodemap.CAMERA_NODES, *nodemap.DEVICE_NODES)} == {"String", "UInt64", "DateTime",
                                                                                 "Boolean"}


def test_docs_opcua_lists_every_node_with_its_type() -> None:
    page = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "opcua.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().strip("`"): line.split("|")[2].strip() for line in page.splitlines()
            if line.startswith(("| `Device/", "| `Cameras/<camera>/"))}
    expected = {nodemap.device_node_id(s.path): s.type for s in nodemap.DEVICE_NODES}
    expected |= {nodemap.camera_node_id("<camera>", s.path): s.type for s in nodemap.CAMERA_NODES}
    assert rows == expected
