"""The agent with escalation on: synthetic camera -> shipped model -> escalation thread -> real gRPC
servicer (scripted, recording its calls) -> outbox -> real Mosquitto -> an independent subscriber."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from agent.config.models import AgentConfig
from agent.escalation.escalator import Escalator
from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_payload
from agent.runtime.service import AgentService, RunSummary
from tests.conftest import MqttCollector
from tests.escalation.scripted import Fail, Hang, ScriptedGateway, reply

SOURCE = "synthetic://conveyor?seed=11&fps=0&frames={frames}"  # seed 11: mostly uncertain after frame 6
FAST_RATE = {"per_minute": 60_000, "burst": 1000}


def config(broker: LocalMosquitto, frames: int, escalation: dict[str, Any] | None) -> AgentConfig:
    return AgentConfig.model_validate({
        "device_id": "box1", "cameras": [{"id": "belt", "source": SOURCE.format(frames=frames)}],
        "mqtt": {"url": broker.url, "stats_interval_s": 0}, "escalation": escalation or {}})


class Run:
    """One service run to the end of its source, watching the escalation thread's bounds on the way."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.service = AgentService(cfg)
        self.peak = {"in_flight": 0, "queued": 0, "waiting": 0}
        self.elapsed = 0.0
        self.summary: RunSummary | None = None

    def go(self, timeout: float = 120.0, settle: bool = False) -> Run:
        """Run until the source ends; with ``settle``, also until every escalation call has ended
        (a shutdown would cancel calls whose answer is still to come)."""
        service = self.service
        service.start()
        assert service.publisher.wait_connected(10.0)
        started = time.monotonic()
        deadline = started + timeout
        while service.loop is not None and not service.loop.finished and time.monotonic() < deadline:
            self._sample(service.escalator)
            time.sleep(0.02)
        self.elapsed = time.monotonic() - started
        assert service.loop is not None and service.loop.finished, "the source did not end in time"
        while settle and service.escalator is not None and time.monotonic() < deadline:
            stats = service.escalator.stats()
            if stats.in_flight == stats.queued == 0:
                break
            time.sleep(0.05)
        self.summary = service.shutdown(timeout=15.0)
        return self

    def _sample(self, escalator: Escalator | None) -> None:
        if escalator is None:
            return
        stats = escalator.stats()
        for key in self.peak:
            self.peak[key] = max(self.peak[key], getattr(stats, key))

    @property
    def fps(self) -> float:
        assert self.summary is not None
        return sum(self.summary.inspected.values()) / self.elapsed


def first_publications(messages: list[Any]) -> dict[str, dict[str, Any]]:
    docs = [json.loads(m.payload) for m in messages]
    for doc in docs:
        assert validate_payload(doc) == [], doc
    return {d["event_id"]: d for d in docs if d["revision"] == 1}


def test_uncertain_frames_are_decided_by_the_vlm_and_confident_ones_never_reach_the_gateway(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector]) -> None:
    frames = 20
    with ScriptedGateway() as gw:
        sub = collector(mosquitto.url, "edge/box1/+/tags")
        run = Run(config(mosquitto, frames, {"gateway": gw.address, "rate_per_camera": FAST_RATE})).go()
        docs = first_publications(sub.wait_for(frames, timeout=15.0))
        asked = {r.event_id for r in gw.requests}
    assert len(docs) == frames and sorted(d["sequence"] for d in docs.values()) == list(range(1, frames + 1))
    escalated = {i for i, d in docs.items() if d["escalation"]["status"] != "not_needed"}
    confident = set(docs) - escalated
    assert escalated and confident
    assert asked <= escalated and not asked & confident  # confident frames never reach the gateway
    for event_id in escalated:
        d = docs[event_id]
        assert d["escalation"]["status"] in ("answered", "cached"), d
        assert (d["decided_by"], d["verdict"]) == ("vlm", "defect")
        vlm = [t for t in d["tags"] if t["source"] == "vlm"]
        assert [(t["label"], t["state"]) for t in vlm] == [("scratch", "accepted")] and "box" not in vlm[0]
        assert d["escalation"]["model"] == "llava:7b"
    for event_id in confident:
        assert docs[event_id]["decided_by"] == "prefilter" and docs[event_id]["verdict"] in ("pass", "defect")
    answered = [d for d in docs.values() if d["escalation"]["status"] == "answered"]
    assert len(answered) == len(asked)  # one call per answered frame; cached ones made none
    summary = run.summary
    assert summary is not None and summary.escalation is not None
    assert sum(summary.verdicts.values()) == frames == sum(summary.escalations.values())
    assert summary.escalations["not_needed"] == len(confident)
    assert summary.escalation.statuses["answered"] == len(answered)
    assert summary.flushed and summary.publisher.acked == frames


def test_a_late_answer_is_published_again_as_revision_2(mosquitto: LocalMosquitto,
                                                        collector: Callable[..., MqttCollector]) -> None:
    frames = 10
    with ScriptedGateway() as gw:
        gw.delay_s = 0.8
        sub = collector(mosquitto.url, "edge/box1/+/tags")
        run = Run(config(mosquitto, frames, {
            "gateway": gw.address, "rate_per_camera": FAST_RATE, "publish_deadline_s": 0.3, "call_deadline_s": 5.0,
            "max_in_flight": 8, "dedupe": {"enabled": False}})).go(settle=True)
        calls = gw.calls()
        messages = sub.wait_for(frames + calls, timeout=15.0)
    docs = [json.loads(m.payload) for m in messages]
    assert all(validate_payload(d) == [] for d in docs)
    by_event: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for d in docs:
        by_event[d["event_id"]].append(d)
    assert len(by_event) == frames and calls > 0
    updated = {e: ds for e, ds in by_event.items() if len(ds) == 2}
    assert summary_updates(run) == len(updated) > 0
    for pair in updated.values():
        first, second = sorted(pair, key=lambda d: d["revision"])
        assert (first["revision"], second["revision"]) == (1, 2)
        assert first["escalation"]["status"] == "timeout" and first["decided_by"] == "prefilter"
        assert second["escalation"]["status"] == "answered" and second["decided_by"] == "vlm"
        assert (second["sequence"], second["captured_at"]) == (first["sequence"], first["captured_at"])


def summary_updates(run: Run) -> int:
    assert run.summary is not None and run.summary.escalation is not None
    return run.summary.escalation.updates


BROKEN: dict[str, tuple[Callable[[ScriptedGateway], None], set[str]]] = {
    # the gateway answers nothing within the call deadline
    "slow": (lambda gw: setattr(gw, "behave", lambda request: Hang()), {"timeout", "rate_limited", "unavailable"}),
    # the gateway's VLM answers garbage
    "garbage": (lambda gw: setattr(gw, "behave", lambda request: Fail(grpc.StatusCode.ABORTED, "not JSON")),
                {"invalid_answer", "rate_limited"}),
    # the gateway is gone
    "down": (lambda gw: gw.stop(), {"unavailable", "rate_limited"}),
}


@pytest.mark.parametrize("mode", sorted(BROKEN))
def test_a_broken_gateway_costs_no_frame(mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector],
                                         mode: str) -> None:
    frames = 16
    breakage, statuses = BROKEN[mode]
    with ScriptedGateway() as gw:
        breakage(gw)
        sub = collector(mosquitto.url, "edge/box1/+/tags")
        escalation = {"gateway": gw.address, "publish_deadline_s": 0.3, "call_deadline_s": 0.8, "max_in_flight": 2,
                      "queue_size": 2, "rate_per_camera": {"per_minute": 600, "burst": 6},
                      "breaker": {"failure_threshold": 3, "open_s": 60}}
        run = Run(config(mosquitto, frames, escalation)).go()
        docs = first_publications(sub.wait_for(frames, timeout=15.0))
    assert len(docs) == frames  # every frame published, once as revision 1
    seen = {d["escalation"]["status"] for d in docs.values()} - {"not_needed"}
    assert seen and seen <= statuses, seen
    assert all(d["decided_by"] == "prefilter" for d in docs.values())
    assert run.peak["in_flight"] <= 2 and run.peak["queued"] <= 2
    assert run.summary is not None and run.summary.escalation is not None
    assert run.summary.escalation.waiting == 0 and run.summary.flushed


@pytest.mark.slow
def test_inspection_keeps_its_frame_rate_while_the_gateway_is_broken(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector]) -> None:
    """Frames inspected per second without escalation, and with a gateway that hangs, one that is gone
    and one whose VLM answers garbage: generous bounds, since the 2-core box is shared."""
    frames = 60
    baseline = Run(config(mosquitto, frames, None)).go()
    rates = {"off": baseline.fps}
    for mode, (breakage, statuses) in sorted(BROKEN.items()):
        with ScriptedGateway() as gw:
            breakage(gw)
            sub = collector(mosquitto.url, "edge/box1/+/tags")
            run = Run(config(mosquitto, frames, {
                "gateway": gw.address, "publish_deadline_s": 0.5, "call_deadline_s": 2.0,
                "rate_per_camera": FAST_RATE, "breaker": {"failure_threshold": 5, "open_s": 1.0}})).go()
            docs = first_publications(sub.wait_for(frames, timeout=20.0))
            sub.close()
        assert len(docs) == frames, mode
        assert {d["escalation"]["status"] for d in docs.values()} - {"not_needed"} <= statuses, mode
        assert run.peak["waiting"] <= 16 + 4 + 32 * 20, mode  # queue + in flight + followers: bounded
        rates[mode] = run.fps
    print("frames inspected per second:", {k: round(v, 1) for k, v in rates.items()})
    for mode in BROKEN:
        assert rates[mode] >= 0.6 * rates["off"], rates


def test_every_frame_is_published_when_the_service_stops_mid_call(mosquitto: LocalMosquitto,
                                                                   collector: Callable[..., MqttCollector]) -> None:
    with ScriptedGateway() as gw:
        gw.behave = lambda request: Hang()
        sub = collector(mosquitto.url, "edge/box1/+/tags")
        cfg = AgentConfig.model_validate({
            "device_id": "box1",
            "cameras": [{"id": "belt", "source": "synthetic://conveyor?seed=11&fps=10"}],  # endless, 10 fps
            "mqtt": {"url": mosquitto.url, "stats_interval_s": 0},
            "escalation": {"gateway": gw.address, "publish_deadline_s": 1.0, "call_deadline_s": 30.0,
                           "rate_per_camera": FAST_RATE}})
        service = AgentService(cfg)
        service.start()
        assert service.publisher.wait_connected(10.0)
        assert wait_for(lambda: gw.calls() >= 2, 30.0)
        summary = service.shutdown(timeout=10.0)
    inspected = sum(summary.inspected.values())
    docs = first_publications(sub.wait_for(inspected, timeout=10.0))
    assert len(docs) == inspected  # nothing lost at shutdown
    waiting = [d for d in docs.values() if d["escalation"]["status"] in ("timeout", "unavailable")]
    assert waiting and all(d["escalation"]["reason"] for d in waiting)
    assert summary.escalation is not None and summary.escalation.waiting == 0


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_stats_document_carries_the_escalation_counters(mosquitto: LocalMosquitto) -> None:
    with ScriptedGateway() as gw:
        gw.behave = lambda request: reply()
        run = Run(config(mosquitto, 8, {"gateway": gw.address, "rate_per_camera": FAST_RATE}))
        run.go()
        doc = run.service.stats_document()
    esc = doc["escalation"]
    assert set(esc) >= {"statuses", "updates", "in_flight", "queued", "breaker", "cache_hits", "refused", "calls"}
    assert esc["breaker"] == "closed" and esc["in_flight"] == 0
    assert sum(doc["escalations"].values()) == 8
    json.dumps(doc)  # JSON-ready
