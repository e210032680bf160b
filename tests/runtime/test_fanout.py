"""The runtime's event fan-out: each event is published once, then every listener hears of it, in order."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence

import pytest

from agent.core.event import EscalationOutcome, TagEvent
from agent.core.ports import Published
from agent.escalation.sampler import LEARN_MODEL_ID, LearnTally
from agent.ops.metrics import EventMetrics
from agent.runtime.fanout import EventFanout
from agent.runtime.listeners import RecorderListener, TallyListener

EventFactory = Callable[..., TagEvent]


class Publisher:
    """Records what it was given; returns row ids 1, 2, ...; raises when told to."""

    def __init__(self) -> None:
        self.events: list[TagEvent] = []
        self.fail: Exception | None = None

    def publish_event(self, event: TagEvent) -> int:
        if self.fail is not None:
            raise self.fail
        self.events.append(event)
        return len(self.events)


class Heard:
    def __init__(self, name: str, log: list[tuple[str, str, bool]]) -> None:
        self.name, self.log = name, log

    def on_published(self, published: Published) -> None:
        self.log.append((self.name, published.event.event_id, published.escalated))


def test_the_publisher_first_then_every_listener_in_order(event_factory: EventFactory) -> None:
    log: list[tuple[str, str, bool]] = []
    publisher = Publisher()
    fanout = EventFanout(publisher, [Heard("a", log)])
    fanout.add(Heard("b", log))
    decided, uncertain = event_factory(verdict="pass"), event_factory(verdict="uncertain", sequence=2)
    assert fanout.publish_event(decided) == 1  # the publisher's answer comes back
    assert fanout.escalated.publish_event(uncertain) == 2
    assert publisher.events == [decided, uncertain]  # each event published once
    assert log == [("a", decided.event_id, False), ("b", decided.event_id, False),
                   ("a", uncertain.event_id, True), ("b", uncertain.event_id, True)]


def test_an_event_the_publisher_refused_is_heard_by_nobody(event_factory: EventFactory) -> None:
    log: list[tuple[str, str, bool]] = []
    publisher = Publisher()
    publisher.fail = OSError("disk full")
    fanout = EventFanout(publisher, [Heard("a", log)])
    with pytest.raises(OSError, match="disk full"):
        fanout.publish_event(event_factory())
    assert log == [] and fanout.busy_since is None  # not counted, and not busy any more


def test_busy_since_is_the_start_of_the_call_in_the_publisher(event_factory: EventFactory) -> None:
    inside, release = threading.Event(), threading.Event()

    class Slow(Publisher):
        def publish_event(self, event: TagEvent) -> int:
            inside.set()
            release.wait(5.0)
            return super().publish_event(event)

    fanout = EventFanout(Slow())
    assert fanout.busy_since is None
    thread = threading.Thread(target=fanout.publish_event, args=(event_factory(),))
    thread.start()
    try:
        assert inside.wait(5.0)
        assert fanout.busy_since is not None  # the watchdog's "outbox commit" stage is busy
    finally:
        release.set()
        thread.join(5.0)
    assert fanout.busy_since is None


def test_the_metrics_count_every_event_the_tally_and_recorder_only_escalated_ones(
        event_factory: EventFactory) -> None:
    metrics, tally = EventMetrics(), LearnTally(["cam1"])
    fanout = EventFanout(Publisher(), [metrics, RecorderListener(None), TallyListener(tally)])
    learn = dataclasses.replace(event_factory(verdict="uncertain"), model_id=LEARN_MODEL_ID,
                                escalation=EscalationOutcome("answered"))
    fanout.publish_event(dataclasses.replace(learn, event_id="decided"))  # the inference loop's: not tallied
    fanout.escalated.publish_event(learn)
    events, _updates, statuses = metrics.counts()
    assert sum(events.values()) == 2 and statuses == {"answered": 2}
    assert tally.snapshot()["cam1"]["answered"] == 1
    assert metrics.latency.snapshots()["publish"].count == 2  # the fan-out timed both calls


class BatchPublisher(Publisher):
    """A publisher that also takes several events in one call (as ReliablePublisher does: one transaction)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []  # events per call, single ones as 1

    def publish_event(self, event: TagEvent) -> int:
        self.calls.append(1)
        return super().publish_event(event)

    def publish_events(self, events: Sequence[TagEvent]) -> list[int]:
        if self.fail is not None:
            raise self.fail
        self.calls.append(len(events))
        self.events.extend(events)
        return list(range(len(self.events) - len(events) + 1, len(self.events) + 1))


def test_a_batch_goes_to_the_publisher_in_one_call_then_each_event_to_the_listeners(
        event_factory: EventFactory) -> None:
    log: list[tuple[str, str, bool]] = []
    publisher = BatchPublisher()
    fanout = EventFanout(publisher, [Heard("a", log)])
    events = [event_factory(verdict="pass", sequence=i) for i in range(3)]
    assert fanout.publish_events(events) == [1, 2, 3]
    assert fanout.publish_events(events[:1]) == [4]  # one event: the single call
    assert fanout.publish_events([]) == []
    assert publisher.calls == [3, 1] and publisher.events == [*events, events[0]]
    assert log == [("a", e.event_id, False) for e in [*events, events[0]]]


def test_a_batch_to_a_publisher_without_batches_goes_one_by_one(event_factory: EventFactory) -> None:
    log: list[tuple[str, str, bool]] = []
    publisher = Publisher()
    fanout = EventFanout(publisher, [Heard("a", log)])
    events = [event_factory(verdict="pass", sequence=i) for i in range(3)]
    assert fanout.publish_events(events) == [1, 2, 3]
    assert publisher.events == events and log == [("a", e.event_id, False) for e in events]


def test_a_batch_the_publisher_refused_is_heard_by_nobody(event_factory: EventFactory) -> None:
    log: list[tuple[str, str, bool]] = []
    publisher = BatchPublisher()
    publisher.fail = OSError("disk full")
    fanout = EventFanout(publisher, [Heard("a", log)])
    with pytest.raises(OSError, match="disk full"):
        fanout.publish_events([event_factory(sequence=1), event_factory(sequence=2)])
    assert log == [] and fanout.busy_since is None
