"""The agent's own OPC UA server with the whole agent running: the shipped model on a synthetic camera, a real
Mosquitto and a real asyncua client on a free port. The node map is docs/opcua.md's."""

from __future__ import annotations

import asyncio
import collections
import json
import pathlib
import time
from collections.abc import Callable

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from agent.config.models import AgentConfig, CameraConfig, MetricsConfig, MqttConfig
from agent.config.opcua_server import OpcUaServerConfig
from agent.publish.local_broker import LocalMosquitto, free_port
from agent.runtime.service import AgentService
from tests.conftest import MqttCollector
from tests.outputs.conftest import make_certificate, read_nodes, run, utc, variable_facts

FRAMES = 45
LAST = ["Verdict", "Sequence", "EventId", "DecidedBy", "EscalationStatus", "CapturedAt", "ModelId"]
COUNTERS = ["Inspected", "Pass", "Defect", "Uncertain", "Escalated"]


def agent_config(broker: LocalMosquitto, port: int, *cameras: CameraConfig, **opcua: object) -> AgentConfig:
    return AgentConfig(device_id="box1", cameras=list(cameras), mqtt=MqttConfig(url=broker.url, stats_interval_s=0),
                       metrics=MetricsConfig(listen="127.0.0.1:0"),
                       opcua_server=OpcUaServerConfig(enabled=True, port=port, refresh_s=0.2, **opcua))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def test_the_address_space_follows_the_events_and_a_reload(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector]
) -> None:
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/edge-agent/"
    belt = CameraConfig(id="belt", source=f"synthetic://conveyor?seed=3&fps=15&frames={FRAMES}")
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    other = CameraConfig(id="other", source="synthetic://conveyor?seed=4&fps=4")  # keeps the loop running
    service = AgentService(agent_config(mosquitto, port, belt, other))
    service.start()
    try:
        assert service.publisher.wait_connected(10.0)
        # values change with events: the sequence read twice while the camera runs
        wait_until(lambda: run(read_nodes(url, ["Cameras/belt/Sequence"]))["Cameras/belt/Sequence"] > 0, 30.0,
                   "a first event in the address space")
        first = run(read_nodes(url, ["Cameras/belt/Sequence"]))["Cameras/belt/Sequence"]
        wait_until(lambda: run(read_nodes(url, ["Cameras/belt/Sequence"]))["Cameras/belt/Sequence"] > first, 30.0,
                   "the sequence to move on")
        wait_until(lambda: service.grabbers[0].ended, 60.0, "belt's source to end")
        wait_until(lambda: sum(json.loads(m.payload)["camera"] == "belt" for m in list(sub.messages)) == FRAMES, 30.0,
                   f"{FRAMES} events of belt on MQTT")
        docs = [d for d in (json.loads(m.payload) for m in list(sub.messages)) if d["camera"] == "belt"]
        counter_paths = [f"Cameras/belt/Counters/{c}" for c in COUNTERS]
        wait_until(lambda: run(read_nodes(url, counter_paths))[counter_paths[0]] == FRAMES, 10.0,
                   f"Inspected = {FRAMES}")
        values = run(read_nodes(url, [f"Cameras/belt/{p}" for p in LAST] + counter_paths + [
            f"Device/{p}" for p in ("DeviceId", "AgentVersion", "ModelId", "MqttConnected", "OutboxBacklog")]))

        # the counters equal the published events' counts
        verdicts = collections.Counter(d["verdict"] for d in docs)
        assert sum(verdicts.values()) == FRAMES and len({d["event_id"] for d in docs}) == FRAMES
        assert {c: values[f"Cameras/belt/Counters/{c}"] for c in COUNTERS} == {
            "Inspected": FRAMES, "Pass": verdicts["pass"], "Defect": verdicts["defect"],
            "Uncertain": verdicts["uncertain"], "Escalated": 0}  # no gateway: nothing went through escalation
        # the last-event nodes are the last published event's
        last = max(docs, key=lambda d: d["sequence"])
        assert last["sequence"] == FRAMES
        assert [values[f"Cameras/belt/{p}"] for p in ("Verdict", "Sequence", "EventId", "DecidedBy",
                                                          "EscalationStatus", "ModelId")] == [
            last["verdict"], FRAMES, last["event_id"], last["decided_by"], last["escalation"]["status"],
            last["prefilter"]["model"]]
        assert utc(values["Cameras/belt/CapturedAt"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ") == last["captured_at"]
        assert values["Device/DeviceId"] == "box1" and values["Device/MqttConnected"] is True
        assert values["Device/ModelId"] == last["prefilter"]["model"] and values["Device/AgentVersion"]
        # stable types, read-only for clients
        for path, kind in (("Cameras/belt/Sequence", ua.VariantType.UInt64), ("Cameras/belt/Verdict",
                           ua.VariantType.String), ("Cameras/belt/CapturedAt", ua.VariantType.DateTime),
                           ("Device/MqttConnected", ua.VariantType.Boolean)):
            variant, access, refused = run(variable_facts(url, path))
            assert variant == kind, path
            assert access & ua.AccessLevel.CurrentWrite.mask == 0 and refused is not None and refused.is_bad(), path

        # a reload that adds a camera and removes one: the address space follows
        added = CameraConfig(id="added", source="synthetic://conveyor?seed=5&fps=8")
        result = service.reload(agent_config(mosquitto, port, other, added))
        assert result.applied and result.plan is not None and result.plan.added == ("added",)
        wait_until(lambda: run(read_nodes(url, ["Cameras/added/Counters/Inspected"]))[
            "Cameras/added/Counters/Inspected"] is not None, 10.0, "the added camera's nodes")
        wait_until(lambda: run(read_nodes(url, ["Cameras/belt/Verdict"]))["Cameras/belt/Verdict"] is None, 10.0,
                   "the removed camera's nodes to go")
        wait_until(lambda: (run(read_nodes(url, ["Cameras/added/Sequence"]))["Cameras/added/Sequence"] or 0) > 0,
                   30.0, "an event of the added camera")
    finally:
        service.shutdown(timeout=10.0)


def test_users_and_signed_encrypted_channel_a_wrong_password_is_refused(
    mosquitto: LocalMosquitto, tmp_path: pathlib.Path
) -> None:
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/edge-agent/"
    server_cert, server_key = make_certificate(tmp_path, "edge-agent", "urn:edge-agent", server=True)
    client_cert, client_key = make_certificate(tmp_path, "scada", "urn:scada", server=False)
    users = tmp_path / "opcua-users"
    users.write_text("# OPC UA users\nscada:correct-horse-battery\n", encoding="utf-8")
    users.chmod(0o600)
    cam = CameraConfig(id="belt", source="synthetic://conveyor?seed=3&fps=8")
    service = AgentService(agent_config(
        mosquitto, port, cam, users_file=users,
        security={"policies": ["Basic256Sha256_SignAndEncrypt"], "cert_file": server_cert, "key_file": server_key}))

    async def encrypted(client: Client) -> None:
        await client.set_security(SecurityPolicyBasic256Sha256, str(client_cert), str(client_key),
                                  server_certificate=str(server_cert), mode=ua.MessageSecurityMode.SignAndEncrypt)

    service.start()
    try:
        # the right user over the encrypted channel reads
        values = run(read_nodes(url, ["Device/DeviceId"], setup=encrypted, user="scada",
                                password="correct-horse-battery"))
        assert values == {"Device/DeviceId": "box1"}
        # a wrong password, an unknown user, no user at all: refused
        for user, password in (("scada", "wrong-password-here"), ("nobody", "correct-horse-battery"), (None, None)):
            with pytest.raises(ua.UaStatusCodeError) as refused:
                run(read_nodes(url, ["Device/DeviceId"], setup=encrypted, user=user, password=password))
            assert refused.value.code in (ua.StatusCodes.BadUserAccessDenied,
                                          ua.StatusCodes.BadIdentityTokenRejected), (user, refused.value)
        # no security at all: the server offers no such endpoint
        with pytest.raises((ua.UaError, OSError, asyncio.TimeoutError)):
            run(read_nodes(url, ["Device/DeviceId"], user="scada", password="correct-horse-battery"))
    finally:
        service.shutdown(timeout=10.0)
