"""Which published messages the broker has acknowledged: :class:`AckLedger` of
:class:`~agent.publish.mqtt_publisher.MqttPublisher`.

paho calls ``on_publish`` while holding its own message lock, and an acknowledgement can arrive before
``publish()`` has returned its message id: such an early acknowledgement is parked until the id is
registered. Every method takes the publisher's lock (the ``changed`` condition's) and notifies it on a change;
``settled`` is called under that lock, so it must be quick and must not call into paho.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Literal

from paho.mqtt.reasoncodes import ReasonCode

Kind = Literal["event", "status", "row"]
Settled = Callable[[int, Kind, str, ReasonCode], None]  # (mid, kind, event id / status / row tag, PUBACK reason)


class AckLedger:
    """Message ids waiting for their PUBACK, and the events published, acknowledged and dropped."""

    def __init__(self, changed: threading.Condition, settled: Settled) -> None:
        self._changed = changed
        self._settled = settled
        self.published = 0  # events handed to publish_event
        self.acked = 0
        self.dropped = 0  # queue full, too large, or refused by the broker
        self._pending: dict[int, tuple[Kind, str]] = {}  # mid -> (kind, event id or status state)
        self._early: dict[int, ReasonCode] = {}  # acks that beat publish() returning the mid

    def track(self, mid: int, kind: Kind, what: str) -> None:
        with self._changed:
            early = self._early.pop(mid, None)
            if early is None:
                self._pending[mid] = (kind, what)
            else:
                self._settle(mid, kind, what, early)

    def on_ack(self, mid: int, reason_code: ReasonCode) -> None:
        with self._changed:
            entry = self._pending.pop(mid, None)
            if entry is None:
                self._early[mid] = reason_code
                return
            self._settle(mid, *entry, reason_code)

    def drop(self) -> int:
        """Count one event dropped before it was queued; the number dropped so far."""
        with self._changed:
            self.dropped += 1
            self._changed.notify_all()
            return self.dropped

    def _settle(self, mid: int, kind: Kind, what: str, reason_code: ReasonCode) -> None:
        if kind == "event":
            if reason_code.is_failure:
                self.dropped += 1
            else:
                self.acked += 1
        self._settled(mid, kind, what, reason_code)
        self._changed.notify_all()

    def unacked_events(self) -> int:
        with self._changed:
            return sum(1 for kind, _ in self._pending.values() if kind == "event")

    def wait_acked(self, mid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while mid in self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def flush(self, timeout: float) -> bool:
        """Wait until every published event is acknowledged (or dropped). False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.published - self.acked - self.dropped > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True


@dataclasses.dataclass(frozen=True)
class PublisherStats:
    """A consistent snapshot of the publisher's counters.

    ``published`` counts every event handed to :meth:`MqttPublisher.publish_event`;
    each ends up ``acked`` (PUBACK received), ``dropped`` (queue full, or the broker
    refused it) or still ``pending`` (queued or in flight).
    """

    published: int
    acked: int
    dropped: int
    pending: int
    connected: bool
    last_error: str | None
    connects: int = 0  # successful connections so far (a change means a reconnect happened)
