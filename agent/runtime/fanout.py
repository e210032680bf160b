"""One event fan-out: every tag event is published once, then each listener hears of it.

The inference loop publishes the decided frames' events and the escalation thread the uncertain ones'
(:attr:`EventFanout.escalated` is its sink); both go through the same :class:`EventFanout`. After the
publisher took the event (committed it to the outbox), the listeners are told, in the order they were
added: the metrics (``agent.ops.metrics.EventMetrics``), the dataset recorder (escalated events only),
the learn-mode tally (escalated events only). A publisher that raises tells no listener; a listener that
raises stops the ones after it and the caller sees the error, as with any bug. The decided events of one
model batch go to the publisher in one call (:meth:`EventFanout.publish_events`: one outbox transaction).

``busy_since`` is when the oldest ``publish_event`` call still in the publisher began (None when none
is): the watchdog's ``outbox commit`` stage.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

from agent.core.event import TagEvent
from agent.core.ports import BatchEventSink, EventListener, EventSink, Published

__all__ = ["EventFanout"]


class EventFanout:
    """The runtime's event sink: the publisher first, then every listener."""

    def __init__(self, publisher: EventSink, listeners: Iterable[EventListener] = ()) -> None:
        self._publisher = publisher
        # decided once (a protocol check is not free): whether the publisher takes several events in one call
        self._batches: BatchEventSink | None = publisher if isinstance(publisher, BatchEventSink) else None
        self._listeners: tuple[EventListener, ...] = tuple(listeners)
        self._lock = threading.Lock()
        self._running: dict[int, float] = {}  # thread id -> start of its publish_event call
        self.escalated: EventSink = _EscalatedSink(self)

    def add(self, listener: EventListener) -> None:
        """Another listener, told of every event published from now on."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    @property
    def busy_since(self) -> float | None:
        with self._lock:
            return min(self._running.values(), default=None)

    def publish_event(self, event: TagEvent) -> int:
        """A decided frame's event (the inference loop's sink)."""
        return self.emit(event, escalated=False)

    def publish_events(self, events: Sequence[TagEvent]) -> list[int]:
        """Decided frames' events of one model batch, in order: in one call to a publisher that takes several
        (:class:`agent.core.ports.BatchEventSink`, one outbox transaction), else one by one. The listeners hear
        of each event once the publisher took them all; each one's ``seconds`` is the whole call's."""
        batches = self._batches
        if batches is None or len(events) < 2:
            return [self.emit(event, escalated=False) for event in events]
        t0 = self._begin()
        try:
            rows = batches.publish_events(events)
        finally:
            self._end()
        seconds = time.monotonic() - t0
        for event in events:
            self._tell(Published(event, seconds, False))
        return rows

    def emit(self, event: TagEvent, *, escalated: bool) -> int:
        t0 = self._begin()
        try:
            row = self._publisher.publish_event(event)
        finally:
            self._end()
        self._tell(Published(event, time.monotonic() - t0, escalated))
        return row

    def _begin(self) -> float:
        t0 = time.monotonic()
        with self._lock:
            self._running[threading.get_ident()] = t0
        return t0

    def _end(self) -> None:
        with self._lock:
            self._running.pop(threading.get_ident(), None)

    def _tell(self, published: Published) -> None:
        for listener in self._listeners:
            listener.on_published(published)


class _EscalatedSink:
    """The escalation thread's sink: the same fan-out, its events marked escalated."""

    def __init__(self, fanout: EventFanout) -> None:
        self._fanout = fanout

    def publish_event(self, event: TagEvent) -> int:
        return self._fanout.emit(event, escalated=True)
