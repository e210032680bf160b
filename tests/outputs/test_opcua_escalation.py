"""The OPC UA counters with escalation in the path: synthetic camera -> agent (shipped model) -> real gRPC gateway ->
fake Ollama; the uncertain frames' events are published by the escalation thread and counted as Escalated, and
every counter equals what went over MQTT."""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable

from agent.config.models import AgentConfig
from agent.publish.local_broker import LocalMosquitto, free_port
from agent.runtime.service import AgentService
from tests.conftest import MqttCollector
from tests.fakes.gateway_fixtures import (  # noqa: F401 (pytest finds fixtures by name)
    StartGateway,
    _no_gateway_environment,
    fake_ollama,
    start_gateway,
)
from tests.fakes.ollama import FakeOllama
from tests.outputs.conftest import read_nodes, run
from tests.outputs.test_opcua_agent import wait_until

FRAMES = 20
COUNTERS = ["Inspected", "Pass", "Defect", "Uncertain", "Escalated"]


def test_escalated_events_are_counted_and_every_counter_matches_mqtt(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector],
        fake_ollama: FakeOllama,  # noqa: F811 (the fixture imported above)
        start_gateway: StartGateway) -> None:  # noqa: F811
    gateway = start_gateway()
    port = free_port()
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    service = AgentService(AgentConfig.model_validate({
        "device_id": "box1",
        "cameras": [{"id": "belt", "source": f"synthetic://conveyor?seed=11&fps=0&frames={FRAMES}"}],
        "mqtt": {"url": mosquitto.url, "stats_interval_s": 0},
        "escalation": {"gateway": gateway.address, "rate_per_camera": {"per_minute": 60_000, "burst": 1000}},
        "opcua_server": {"enabled": True, "port": port, "refresh_s": 0.2}}))
    service.start()
    try:
        assert service.publisher.wait_connected(10.0)
        service.wait(threading.Event(), duration=60.0)  # until the source ended and the loop finished
        # every frame's event, the escalated ones' included (the fake Ollama answers at once)
        wait_until(lambda: sum(json.loads(m.payload)["revision"] == 1 for m in list(sub.messages)) == FRAMES, 30.0,
                   f"{FRAMES} events on MQTT")
        docs = [json.loads(m.payload) for m in list(sub.messages)]
        paths = [f"Cameras/belt/Counters/{c}" for c in COUNTERS]
        url = f"opc.tcp://127.0.0.1:{port}/edge-agent/"
        wait_until(lambda: run(read_nodes(url, paths[:1]))[paths[0]] == FRAMES, 10.0, f"Inspected = {FRAMES}")
        values = run(read_nodes(url, paths))
    finally:
        service.shutdown(timeout=15.0)
    first = [d for d in docs if d["revision"] == 1]
    assert len(first) == FRAMES
    verdicts = collections.Counter(d["verdict"] for d in first)
    escalated = sum(d["escalation"]["status"] != "not_needed" for d in first)
    assert escalated > 0 and any(d["decided_by"] == "vlm" for d in first)  # the test proves something
    assert {c: values[f"Cameras/belt/Counters/{c}"] for c in COUNTERS} == {
        "Inspected": FRAMES, "Pass": verdicts["pass"], "Defect": verdicts["defect"],
        "Uncertain": verdicts["uncertain"], "Escalated": escalated}
