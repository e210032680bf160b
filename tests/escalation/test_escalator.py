"""The escalation thread against a real grpc.aio servicer: publication on answer or deadline, revision 2,
the breaker opening and closing, rate limits, the bounded queue, the near-duplicate cache, shutdown."""

from __future__ import annotations

import datetime
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import grpc
import numpy as np
import pytest

from agent.config.escalation import EscalationConfig
from agent.config.models import TriageConfig
from agent.core.decision import TriageDecision
from agent.core.detections import Detection
from agent.core.event import TagEvent, build_event
from agent.core.frame import Frame
from agent.escalation.escalator import ESCALATED_STATUSES, Escalator
from agent.publish.schema import validate_payload
from agent.triage.policy import triage
from tests.escalation.scripted import Fail, Hang, ScriptedGateway, reply


class ListSink:
    """Records published events (from any thread)."""

    def __init__(self) -> None:
        self.events: list[TagEvent] = []
        self._cond = threading.Condition()

    def publish_event(self, event: TagEvent) -> int:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()
            return len(self.events)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[TagEvent]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.events) >= n, timeout)
            return list(self.events)

    def by_status(self) -> dict[str, int]:
        with self._cond:
            out: dict[str, int] = {}
            for e in self.events:
                out[e.escalation.status] = out.get(e.escalation.status, 0) + 1
            return out


@functools.cache
def image(seed: int) -> np.ndarray:
    """A distinct smooth 320x240 frame per seed (far apart in perceptual hash)."""
    noise = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return cv2.resize(noise, (320, 240), interpolation=cv2.INTER_CUBIC)


def uncertain(sequence: int, seed: int | None = None, camera: str = "cam1") -> tuple[Frame, TriageDecision, TagEvent]:
    """An uncertain frame (one dent at 0.42), its decision and its prefilter event."""
    now = datetime.datetime.now(datetime.timezone.utc)
    frame = Frame(camera, sequence, now, time.monotonic(), image(sequence if seed is None else seed))
    decision = triage([Detection("dent", 1, 0.42, (100.0, 80.0, 160.0, 130.0))], TriageConfig())
    event = build_event(device="box1", camera=camera, sequence=sequence, captured_at=now, frame_width=320,
                        frame_height=240, decision=decision, model_id="conveyor-yolov8n@0123", prefilter_latency_ms=9.0)
    return frame, decision, event


@pytest.fixture
def gateway() -> Iterator[ScriptedGateway]:
    with ScriptedGateway() as gw:
        yield gw


@pytest.fixture
def escalator() -> Iterator[Callable[..., tuple[Escalator, ListSink]]]:
    started: list[Escalator] = []

    def make(gateway: str, **settings: Any) -> tuple[Escalator, ListSink]:
        fields: dict[str, Any] = {"gateway": gateway, "publish_deadline_s": 1.0, "call_deadline_s": 3.0,
                                  "rate_per_camera": {"per_minute": 6000, "burst": 100}}
        config = EscalationConfig.model_validate(fields | settings)
        sink = ListSink()
        esc = Escalator(config, sink)
        esc.start()
        started.append(esc)
        return esc, sink

    yield make
    for esc in started:
        esc.stop(5.0)


Make = Callable[..., tuple[Escalator, ListSink]]


def valid(events: list[TagEvent]) -> bool:
    return all(validate_payload(e.to_payload()) == [] for e in events)


def test_an_answer_is_published_at_once_decided_by_the_vlm(gateway: ScriptedGateway, escalator: Make) -> None:
    esc, sink = escalator(gateway.address)
    frame, decision, event = uncertain(1)
    started = time.monotonic()
    esc.submit(frame, decision, event)
    (published,) = sink.wait_for(1)
    assert time.monotonic() - started < 1.0  # before the publish deadline
    assert (published.event_id, published.revision, published.verdict, published.decided_by) == (
        event.event_id, 1, "defect", "vlm")
    assert published.escalation.status == "answered" and published.escalation.model == "llava:7b"
    assert [t.label for t in published.vlm_tags] == ["scratch"] and valid([published])
    (request,) = gateway.requests
    assert request.event_id == event.event_id and request.frame_sequence == 1 and len(request.crops) == 1
    stats = esc.stats()
    assert stats.statuses == dict.fromkeys(ESCALATED_STATUSES, 0) | {"answered": 1}
    assert (stats.calls, stats.codes, stats.in_flight, stats.waiting, stats.breaker) == (1, {"OK": 1}, 0, 0, "closed")


def test_an_answer_with_notes_says_them_as_its_reason(gateway: ScriptedGateway, escalator: Make) -> None:
    note = "2 of 4 crop(s) left out to fit the model's context (4096 tokens, 768 per image, 512 kept for the answer)"
    answer = reply()
    answer.notes.append(note)
    gateway.behave = lambda request: answer
    esc, sink = escalator(gateway.address)
    esc.submit(*uncertain(1))
    (published,) = sink.wait_for(1)
    assert (published.escalation.status, published.escalation.reason) == ("answered", note) and valid([published])


def test_past_the_publish_deadline_timeout_then_a_late_answer_as_revision_2(gateway: ScriptedGateway,
                                                                              escalator: Make) -> None:
    gateway.delay_s = 0.8
    esc, sink = escalator(gateway.address, publish_deadline_s=0.3, call_deadline_s=3.0)
    frame, decision, event = uncertain(1)
    esc.submit(frame, decision, event)
    first, update = sink.wait_for(2)
    assert (first.event_id, first.revision, first.escalation.status) == (event.event_id, 1, "timeout")
    assert (first.verdict, first.decided_by) == ("uncertain", "prefilter")
    assert first.escalation.reason is not None and "revision 2" in first.escalation.reason
    assert (update.event_id, update.revision, update.escalation.status) == (event.event_id, 2, "answered")
    assert (update.verdict, update.decided_by) == ("defect", "vlm") and update.created_at > first.created_at
    assert valid([first, update])
    stats = esc.stats()
    assert (stats.statuses["timeout"], stats.statuses["answered"], stats.updates) == (1, 0, 1)


def test_an_answer_after_the_call_deadline_never_comes(gateway: ScriptedGateway, escalator: Make) -> None:
    gateway.behave = lambda request: Hang()
    esc, sink = escalator(gateway.address, publish_deadline_s=0.2, call_deadline_s=0.5)
    esc.submit(*uncertain(1))
    (first,) = sink.wait_for(1)
    assert first.escalation.status == "timeout"
    deadline = time.monotonic() + 5
    while esc.stats().late_failures == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = esc.stats()
    assert (stats.late_failures, stats.updates, stats.codes) == (1, 0, {"DEADLINE_EXCEEDED": 1})
    assert len(sink.events) == 1


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (Fail(grpc.StatusCode.INVALID_ARGUMENT, "image is not JPEG or PNG"), "rejected"),
        (Fail(grpc.StatusCode.ABORTED, "the VLM's answer did not match the schema"), "invalid_answer"),
        (Fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "the gateway is busy"), "rate_limited"),
        (Fail(grpc.StatusCode.FAILED_PRECONDITION, "model not pulled"), "unavailable"),
    ],
)
def test_a_failed_call_is_published_at_once_with_its_status(gateway: ScriptedGateway, escalator: Make,
                                                               failure: Fail, status: str) -> None:
    gateway.behave = lambda request: failure
    esc, sink = escalator(gateway.address, publish_deadline_s=5.0, call_deadline_s=10.0)
    started = time.monotonic()
    esc.submit(*uncertain(1))
    (event,) = sink.wait_for(1)
    assert time.monotonic() - started < 2.0  # not held until the 5 s deadline
    assert event.escalation.status == status and event.decided_by == "prefilter" and event.verdict == "uncertain"
    assert event.escalation.reason == f"{failure.code.name}: {failure.details}" and valid([event])


def test_rejected_requests_are_logged(gateway: ScriptedGateway, escalator: Make,
                                      caplog: pytest.LogCaptureFixture) -> None:
    gateway.behave = lambda request: Fail(grpc.StatusCode.INVALID_ARGUMENT, "template_id 'x' is unknown")
    esc, sink = escalator(gateway.address)
    with caplog.at_level(logging.WARNING, logger="agent.escalation"):
        esc.submit(*uncertain(1))
        esc.submit(*uncertain(2))
        sink.wait_for(2)
    warnings = [r for r in caplog.records if "rejected a request" in r.getMessage()]
    assert len(warnings) == 1  # once a minute, not per frame
    assert "template_id 'x' is unknown" in warnings[0].getMessage()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_breaker_opens_while_the_gateway_is_down_and_closes_when_it_is_back(
        gateway: ScriptedGateway, escalator: Make, caplog: pytest.LogCaptureFixture) -> None:
    esc, sink = escalator(gateway.address, breaker={"failure_threshold": 3, "open_s": 0.5})
    gateway.stop()
    with caplog.at_level(logging.WARNING, logger="agent.escalation"):
        for seq in range(1, 4):  # three calls fail: the breaker opens
            esc.submit(*uncertain(seq))
            sink.wait_for(seq)
        assert esc.stats().breaker == "open"
        for seq in range(4, 9):  # refused at once, no call made
            esc.submit(*uncertain(seq))
        sink.wait_for(8)
    stats = esc.stats()
    assert (stats.calls, stats.refused["breaker_open"], stats.breaker_opens) == (3, 5, 1)
    assert sink.by_status() == {"unavailable": 8}
    refused = sink.events[-1].escalation.reason or ""
    assert refused.startswith("circuit breaker open after repeated failures (last: UNAVAILABLE")
    assert any("circuit breaker opened" in r.getMessage() for r in caplog.records)

    gateway.start()  # back on the same port
    seq = 8
    def answered() -> bool:
        nonlocal seq
        seq += 1
        esc.submit(*uncertain(seq))
        sink.wait_for(seq)
        time.sleep(0.1)
        return sink.events[-1].escalation.status == "answered"
    assert wait_until(answered, timeout=15.0), sink.by_status()
    assert esc.stats().breaker == "closed" and any("closed" in r.getMessage() for r in caplog.records)
    assert valid(sink.events)


def test_the_cameras_budget_refuses_at_once(gateway: ScriptedGateway, escalator: Make) -> None:
    esc, sink = escalator(gateway.address, rate_per_camera={"per_minute": 1, "burst": 2})
    for seq in range(1, 5):
        esc.submit(*uncertain(seq))
    events = sink.wait_for(4)
    assert sorted(e.escalation.status for e in events) == ["answered", "answered", "rate_limited", "rate_limited"]
    limited = [e for e in events if e.escalation.status == "rate_limited"]
    assert (limited[0].escalation.reason or "").startswith("camera cam1 spent its escalation budget (1/min, burst 2)")
    assert esc.stats().refused["rate_limit"] == 2 and gateway.calls() == 2


def test_a_full_queue_refuses_without_blocking_and_memory_stays_bounded(gateway: ScriptedGateway,
                                                                         escalator: Make) -> None:
    gateway.behave = lambda request: Hang()
    esc, sink = escalator(gateway.address, max_in_flight=2, queue_size=3, publish_deadline_s=0.5,
                          call_deadline_s=5.0, breaker={"failure_threshold": 100})
    slowest = 0.0
    for seq in range(1, 41):
        started = time.monotonic()
        esc.submit(*uncertain(seq))
        slowest = max(slowest, time.monotonic() - started)
        stats = esc.stats()
        assert stats.in_flight + stats.queued <= 5 and stats.waiting <= 5
    assert slowest < 0.25  # submit never waits for the gateway
    events = sink.wait_for(40)
    statuses = sink.by_status()
    assert statuses == {"rate_limited": 35, "timeout": 5}, statuses  # 2 calls + 3 queued time out, the rest refused
    assert esc.stats().refused["queue_full"] == 35
    assert all("escalation queue full" in (e.escalation.reason or "") for e in events
               if e.escalation.status == "rate_limited")
    assert len({e.event_id for e in events}) == 40 and valid(events)


def test_a_static_scene_is_asked_once(gateway: ScriptedGateway, escalator: Make) -> None:
    gateway.delay_s = 0.3
    esc, sink = escalator(gateway.address)
    for seq in range(1, 4):  # the same picture three times while the first call runs
        esc.submit(*uncertain(seq, seed=7))
    events = sink.wait_for(3)
    esc.submit(*uncertain(4, seed=7))  # and once more after the answer
    events = sink.wait_for(4)
    assert gateway.calls() == 1
    by_seq = {e.sequence: e for e in events}
    assert by_seq[1].escalation.status == "answered"
    for seq in (2, 3, 4):
        e = by_seq[seq]
        assert (e.escalation.status, e.verdict, e.decided_by) == ("cached", "defect", "vlm")
        assert (e.escalation.reason or "").startswith(f"near-duplicate of frame 1 (event {by_seq[1].event_id}")
        assert e.escalation.latency_ms is None and e.escalation.model == "llava:7b"
    stats = esc.stats()
    assert (stats.cache_joins, stats.cache_hits, stats.statuses["cached"]) == (2, 1, 3)
    esc.submit(*uncertain(5, seed=8))  # another picture is asked about
    sink.wait_for(5)
    assert gateway.calls() == 2 and valid(sink.events)


def test_near_duplicates_of_a_failed_call_share_its_failure(gateway: ScriptedGateway, escalator: Make) -> None:
    gateway.delay_s = 0.3
    gateway.behave = lambda request: Fail(grpc.StatusCode.FAILED_PRECONDITION, "model not pulled")
    esc, sink = escalator(gateway.address)
    esc.submit(*uncertain(1, seed=7))
    esc.submit(*uncertain(2, seed=7))
    events = {e.sequence: e for e in sink.wait_for(2)}
    assert [events[s].escalation.status for s in (1, 2)] == ["unavailable", "unavailable"]
    assert (events[2].escalation.reason or "").startswith("near-duplicate of frame 1, whose escalation ended: "
                                                          "FAILED_PRECONDITION: model not pulled")
    gateway.behave = lambda request: reply()
    esc.submit(*uncertain(3, seed=7))  # a failure is not cached: asked again
    sink.wait_for(3)
    assert gateway.calls() == 2 and sink.events[-1].escalation.status == "answered"


def test_dedupe_can_be_switched_off(gateway: ScriptedGateway, escalator: Make) -> None:
    esc, sink = escalator(gateway.address, dedupe={"enabled": False})
    for seq in range(1, 4):
        esc.submit(*uncertain(seq, seed=7))
    sink.wait_for(3)
    assert gateway.calls() == 3 and sink.by_status() == {"answered": 3}


def test_shutdown_publishes_every_frame(gateway: ScriptedGateway) -> None:
    gateway.behave = lambda request: Hang()
    config = EscalationConfig(gateway=gateway.address, publish_deadline_s=0.5, call_deadline_s=30.0, max_in_flight=2,
                              queue_size=6, rate_per_camera={"per_minute": 60, "burst": 10})  # type: ignore[arg-type]
    sink = ListSink()
    esc = Escalator(config, sink)
    esc.start()
    for seq in range(1, 7):
        esc.submit(*uncertain(seq))
    assert wait_until(lambda: esc.stats().in_flight == 2)
    started = time.monotonic()
    esc.stop(5.0)
    assert time.monotonic() - started < 2.0  # waits at most the publish deadline
    events = sink.wait_for(6, timeout=0.1)
    assert sorted(e.sequence for e in events) == [1, 2, 3, 4, 5, 6]  # each exactly once
    statuses = sink.by_status()
    assert statuses == {"timeout": 2, "unavailable": 4}, statuses  # running ones timed out; queued ones never sent
    assert all(e.revision == 1 for e in events) and valid(events)
    assert esc.stats().abandoned == 2
    esc.submit(*uncertain(7))  # after the stop: published at once, not lost
    assert sink.events[-1].escalation.status == "unavailable" and sink.events[-1].sequence == 7


def test_no_gateway_no_escalator() -> None:
    with pytest.raises(ValueError, match="escalation.gateway is not set"):
        Escalator(EscalationConfig(), ListSink())
