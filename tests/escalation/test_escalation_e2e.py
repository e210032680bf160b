"""End to end: synthetic camera -> agent service (shipped model, triage, escalation thread) -> real gRPC
gateway (``agent.gateway.server``) -> fake Ollama (scripted answers, faults) -> outbox -> real Mosquitto.

The fault tests run a live 4 fps camera through three phases (healthy, Ollama broken, healthy again)
and check that inspection keeps the camera's rate, that every frame is published once with the status
the fault calls for, that the escalation thread's queues stay bounded, and that the circuit breaker
opens during the fault and closes again after it.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from agent.config.models import AgentConfig
from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_payload
from agent.runtime.service import AgentService
from tests.conftest import MqttCollector
from tests.fakes.gateway_fixtures import StartGateway
from tests.fakes.ollama import BUSY_MESSAGE, VALID_ANSWER, FakeOllama, Reply

FAST_RATE = {"per_minute": 60_000, "burst": 1000}


def agent_config(broker: LocalMosquitto, source: str, escalation: dict[str, Any]) -> AgentConfig:
    return AgentConfig.model_validate({
        "device_id": "box1", "cameras": [{"id": "belt", "source": source}],
        "mqtt": {"url": broker.url, "stats_interval_s": 0}, "escalation": escalation})


def revision_1(messages: list[Any]) -> dict[str, dict[str, Any]]:
    docs = [json.loads(m.payload) for m in messages]
    for doc in docs:
        assert validate_payload(doc) == [], doc
    return {d["event_id"]: d for d in docs if d["revision"] == 1}


def test_uncertain_frames_come_out_decided_by_the_vlm_and_confident_ones_never_reach_the_gateway(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], fake_ollama: FakeOllama,
        start_gateway: StartGateway) -> None:
    frames = 20
    gateway = start_gateway()
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    service = AgentService(agent_config(mosquitto, f"synthetic://conveyor?seed=11&fps=0&frames={frames}",
                                        {"gateway": gateway.address, "rate_per_camera": FAST_RATE}))
    service.start()
    assert service.publisher.wait_connected(10.0)
    service.wait(threading.Event(), duration=60.0)
    summary = service.shutdown(timeout=15.0)

    docs = revision_1(sub.wait_for(frames, timeout=15.0))
    assert len(docs) == frames == sum(summary.inspected.values())
    statuses = collections.Counter(d["escalation"]["status"] for d in docs.values())
    assert set(statuses) <= {"not_needed", "answered", "cached"} and statuses["answered"] > 0, statuses
    chats = [r for r in fake_ollama.chat_requests() if r.body.get("messages")]
    # one chat per answered frame (the fake's answers are valid the first time); cached and confident frames
    # made none: confident frames never reach the gateway
    assert len(chats) == statuses["answered"]
    for d in docs.values():
        if d["escalation"]["status"] == "not_needed":
            assert d["decided_by"] == "prefilter" and d["verdict"] in ("pass", "defect")
            continue
        assert (d["decided_by"], d["verdict"]) == ("vlm", VALID_ANSWER["verdict"])
        vlm = sorted((t["label"], t["confidence"]) for t in d["tags"] if t["source"] == "vlm")
        assert vlm == sorted((t["label"], t["confidence"]) for t in VALID_ANSWER["tags"])
        assert d["escalation"]["description"] == VALID_ANSWER["description"]
        assert d["escalation"]["model"] == "llava:7b"
    first = chats[0].body
    user = first["messages"][-1]
    assert len(user["images"]) >= 2  # the frame and at least one crop of an uncertain detection
    assert "not sure" in user["content"]  # the prefilter's hints reached the VLM's prompt
    assert summary.escalation is not None and summary.escalation.breaker == "closed"


@dataclasses.dataclass(frozen=True)
class Fault:
    """How to break Ollama and mend it, what the frames' statuses are meanwhile, whether the breaker opens."""

    brake: Callable[[FakeOllama], None]
    mend: Callable[[FakeOllama], None]
    statuses: frozenset[str]  # what escalated frames may be published with during the fault
    shows: str  # the status that must show up
    opens_breaker: bool


def _answer_with(fn: Callable[[dict[str, Any]], Reply | str] | None) -> Callable[[FakeOllama], None]:
    def apply(fake: FakeOllama) -> None:
        fake.answer_fn = fn
    return apply


def _delay(seconds: float) -> Callable[[FakeOllama], None]:
    def apply(fake: FakeOllama) -> None:
        fake.delay_s = seconds
    return apply


OUT_OF_RANGE = json.dumps({**VALID_ANSWER, "tags": [{"label": "part", "confidence": 1.7}]})
FAULTS = {
    # Ollama's process is gone: the gateway says UNAVAILABLE and its health NOT_SERVING
    "stopped": Fault(lambda f: f.down(), lambda f: f.up(), frozenset({"unavailable"}), "unavailable", True),
    # Ollama answers after the call deadline: the event goes out at the publish deadline as timeout
    "slow": Fault(_delay(3.0), _delay(0.0), frozenset({"timeout", "unavailable", "rate_limited"}), "timeout", True),
    # the model answers what its grammar lets through but the schema refuses (a confidence above 1): the
    # gateway retries once, then ABORTED; the gateway itself is healthy, so the breaker stays closed
    "garbage": Fault(_answer_with(lambda body: OUT_OF_RANGE), _answer_with(None), frozenset({"invalid_answer"}),
                     "invalid_answer", False),
    # Ollama's queue is full
    "503": Fault(_answer_with(lambda body: Reply(status=503, error=BUSY_MESSAGE)), _answer_with(None),
                 frozenset({"unavailable"}), "unavailable", True),
    # the model is not pulled
    "404": Fault(lambda f: f.remove("llava:7b"), lambda f: f.pull("llava:7b"), frozenset({"unavailable"}),
                 "unavailable", True),
}
CAMERA_FPS = 4.0


class Watch:
    """Polls the running service: inspected frames, escalation stats peaks, breaker states seen."""

    def __init__(self, service: AgentService) -> None:
        self.service = service
        self.peak = {"in_flight": 0, "queued": 0, "waiting": 0}
        self.breaker_states: set[str] = set()

    def inspected(self) -> int:
        loop = self.service.loop
        return sum(loop.counters.inspected.values()) if loop is not None else 0

    def poll(self) -> None:
        escalator = self.service.escalator
        if escalator is None:
            return
        stats = escalator.stats()
        self.breaker_states.add(stats.breaker)
        for key in self.peak:
            self.peak[key] = max(self.peak[key], getattr(stats, key))

    def until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if predicate():
                return True
            time.sleep(0.05)
        return False


def _statuses_since(sub: MqttCollector, since: str) -> collections.Counter[str]:
    """Statuses of revision-1 events captured at or after ``since`` (RFC 3339 strings compare in order)."""
    docs = [json.loads(m.payload) for m in list(sub.messages)]
    return collections.Counter(d["escalation"]["status"] for d in docs
                               if d["revision"] == 1 and d["captured_at"] >= since)


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.slow  # 8 s each on the shared 2-core box (test_escalator.py covers the breaker quickly)
@pytest.mark.parametrize("name", sorted(FAULTS))
def test_with_ollama_broken_inspection_goes_on_and_the_breaker_opens_and_closes(
        name: str, mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], fake_ollama: FakeOllama,
        start_gateway: StartGateway) -> None:
    fault = FAULTS[name]
    gateway = start_gateway()
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    service = AgentService(agent_config(mosquitto, f"synthetic://conveyor?seed=11&fps={CAMERA_FPS:g}", {
        "gateway": gateway.address, "rate_per_camera": FAST_RATE, "publish_deadline_s": 0.4, "call_deadline_s": 1.0,
        "max_in_flight": 2, "queue_size": 4, "breaker": {"failure_threshold": 3, "open_s": 0.5}}))
    watch = Watch(service)
    service.start()
    try:
        assert service.publisher.wait_connected(10.0)
        # healthy: the VLM answers
        assert watch.until(lambda: _statuses_since(sub, "")["answered"] > 0, 30.0), _statuses_since(sub, "")

        # broken: inspection goes on at the camera's rate, the frames say what happened
        fault.brake(fake_ollama)
        broke_at, inspected_before, t0 = _now_rfc3339(), watch.inspected(), time.monotonic()
        assert watch.until(lambda: _statuses_since(sub, broke_at)[fault.shows] > 0, 20.0), \
            _statuses_since(sub, broke_at)
        if fault.opens_breaker:
            assert watch.until(lambda: "open" in watch.breaker_states, 20.0), watch.breaker_states
        watch.until(lambda: time.monotonic() - t0 >= 2.0, 5.0)  # at least 2 s of fault to measure the rate
        fault_fps = (watch.inspected() - inspected_before) / (time.monotonic() - t0)
        during = _statuses_since(sub, broke_at)

        # mended: the breaker lets a probe through after open_s and closes on its answer
        fault.mend(fake_ollama)
        mended_at = _now_rfc3339()
        assert watch.until(lambda: _statuses_since(sub, mended_at)["answered"] > 0, 30.0), \
            _statuses_since(sub, mended_at)
        assert watch.until(lambda: service.escalator is not None and service.escalator.stats().breaker == "closed",
                           10.0)
    finally:
        summary = service.shutdown(timeout=15.0)

    inspected = sum(summary.inspected.values())
    docs = revision_1(sub.wait_for(inspected + 1000, timeout=3.0))  # every message that came (updates too)
    assert len(docs) == inspected  # every inspected frame published once as revision 1
    escalated = set(during) - {"not_needed"}
    allowed = fault.statuses | {"answered", "cached"}  # frames inspected just before the fault still got answers
    assert escalated <= allowed, during
    assert fault_fps >= 0.6 * CAMERA_FPS, (fault_fps, name)  # inspection keeps the camera's rate
    stats = summary.escalation
    assert stats is not None
    assert (stats.breaker_opens >= 1) == fault.opens_breaker, (stats.breaker_opens, name)
    assert watch.peak["in_flight"] <= 2 and watch.peak["queued"] <= 4, watch.peak  # bounded
    assert watch.peak["waiting"] <= 2 + 4 + 32 * 6, watch.peak
    assert stats.waiting == 0 and summary.flushed
