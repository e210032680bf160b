"""Store-and-forward publishing: outbox first, MQTT second.

``ReliablePublisher.publish_event`` commits the event to the SQLite outbox and
returns; a forwarder thread sends rows oldest first through the MQTT connection,
with at most ``inflight`` unacknowledged at a time, and deletes each row when its
PUBACK arrives. Nothing is deleted on a send alone.

Ordering. paho resends its in-flight QoS 1 messages itself after a reconnect. So
that a new row can never overtake one of those, after a reconnect the forwarder
sends nothing new until every message in flight at the disconnect is
acknowledged. Per camera, events therefore reach the broker in commit order;
the only duplicates are at-least-once redeliveries (a row sent, acknowledged, and
the agent killed before the row's deletion), which are counted.

A row the broker refuses (a PUBACK failure code, e.g. "Not authorized" on an ACL)
stays in the outbox and is sent again after ``refused_retry_s``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.publish.event import TagEvent
from agent.publish.mqtt_publisher import MqttPublisher
from agent.publish.outbox import Outbox, OutboxStats
from agent.publish.topics import snapshot_topic, tags_topic

log = logging.getLogger(__name__)

SNAPSHOT_SUFFIX = "/snapshot"  # outbox rows holding a snapshot carry "<event_id>/snapshot"


@dataclasses.dataclass(frozen=True)
class ReliableStats:
    committed: int  # events committed to the outbox by this process
    acked: int  # rows acknowledged by the broker and deleted
    evicted: int  # rows evicted unsent because the outbox was full (this process)
    evicted_total: int  # over the outbox file's life
    redelivered: int  # rows sent again after a restart (may be duplicates downstream)
    resent: int  # in flight at a disconnect, sent again by paho after the reconnect (may be duplicates)
    refused: int  # PUBACKs with a failure code (rows kept and retried)
    pending: int  # rows in the outbox now (unsent or unacknowledged)
    pending_bytes: int
    inflight: int
    connected: bool
    last_error: str | None

    # the names the demo's summary shares with MqttPublisher's stats
    @property
    def published(self) -> int:
        return self.committed

    @property
    def dropped(self) -> int:
        return self.evicted


class ReliablePublisher:
    def __init__(
        self,
        outbox: Outbox,
        mqtt: MqttPublisher,
        *,
        topic_prefix: str,
        inflight: int = 64,
        refused_retry_s: float = 5.0,
        hold_timeout_s: float = 30.0,
        stats_topic: str | None = None,
    ) -> None:
        if inflight < 1:
            raise ValueError(f"inflight must be at least 1, got {inflight}")
        self.outbox = outbox
        self.mqtt = mqtt
        self._prefix = topic_prefix
        self._window = inflight
        self._refused_retry_s = refused_retry_s
        self._hold_timeout_s = hold_timeout_s
        self._stats_topic = stats_topic
        self._evicted_reported = outbox.stats().evicted_total
        self._cv = threading.Condition()
        self._inflight: set[int] = set()  # row ids sent and not yet settled
        self._held_back: set[int] = set()  # in flight at the last disconnect: must settle first
        self._acked_ids: list[int] = []  # acknowledged, not yet deleted
        self._last_sent = 0  # highest row id handed to MQTT in this process
        self._rewind_to: int | None = None  # a refused row: resend from here after a pause
        self._rewind_at = 0.0
        self._new_rows = False
        self._blocked = False
        self.forwarder_passes = 0  # loop iterations of the forwarder (a spinning forwarder shows here)
        self.last_progress = time.monotonic()  # start of the forwarder's current pass (watchdog, /healthz)
        self._connects_seen = 0
        self._held_since = 0.0
        self._acked = self._refused = self._redelivered = self._resent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._replay_limit = outbox.sent_high_water  # rows up to here were sent by an earlier process
        mqtt.set_ack_listener(self._on_ack)
        mqtt.add_status_extra(self._status_extra)

    # -- the Publisher interface the service uses ---------------------------------------------

    def start(self) -> None:
        self.mqtt.start()
        self._thread = threading.Thread(target=self._run, name="outbox-forwarder", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        return self.mqtt.wait_connected(timeout)

    def publish_event(self, event: TagEvent) -> int:
        """Commit ``event`` to the outbox (durably) and return its row id."""
        row_id = self.outbox.append(event.event_id, event.camera, tags_topic(self._prefix, event.device,
                                                                             event.camera), event.to_json())
        with self._cv:
            self._new_rows = True
            self._cv.notify_all()
        return row_id

    def publish_snapshot(self, camera: str, event_id: str, jpeg: bytes, durable: bool) -> bool:
        """A snapshot: through the outbox when ``durable``, else sent only while connected."""
        topic = snapshot_topic(self._prefix, self.mqtt.device_id, camera)
        if not durable:
            return self.mqtt.publish_blob(topic, jpeg, "image/jpeg", event_id)
        self.outbox.append(event_id + SNAPSHOT_SUFFIX, camera, topic, jpeg)
        with self._cv:
            self._new_rows = True
            self._cv.notify_all()
        return True

    def publish_stats(self, doc: dict[str, Any]) -> None:
        """Periodic counters (best effort); the retained status is refreshed when evictions grew."""
        if self._stats_topic is not None:
            self.mqtt.publish_stats(self._stats_topic, doc)
        evicted = self.outbox.stats().evicted_total
        if evicted != self._evicted_reported:
            self._evicted_reported = evicted
            self.mqtt.republish_status()

    def add_status_extra(self, provider: Callable[[], dict[str, Any]]) -> None:
        """More fields for the retained ``online`` status (see :meth:`MqttPublisher.add_status_extra`)."""
        self.mqtt.add_status_extra(provider)

    def republish_status(self) -> None:
        """Publish the retained ``online`` status again, without waiting (nothing while disconnected)."""
        self.mqtt.republish_status()

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (every event acknowledged). False on timeout."""
        deadline = time.monotonic() + timeout
        while self.outbox.stats().rows > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cv:
                self._cv.wait(min(remaining, 0.05))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._delete_acked()
        self.mqtt.stop(timeout)
        self._delete_acked()  # acks that arrived while the offline status was sent
        left = self.outbox.stats().rows
        if left:
            log.info("%d event(s) stay in the outbox %s and are sent after the next start", left, self.outbox.path)
        self.outbox.close()

    @property
    def forwarder_alive(self) -> bool:
        """True while the forwarder thread runs (it ends on stop(), or on a bug, which it logs)."""
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> ReliableStats:
        o: OutboxStats = self.outbox.stats()
        m = self.mqtt.stats()
        with self._cv:
            return ReliableStats(
                committed=o.appended, acked=self._acked, evicted=o.evicted, evicted_total=o.evicted_total,
                redelivered=self._redelivered, resent=self._resent, refused=self._refused, pending=o.rows,
                pending_bytes=o.bytes, inflight=len(self._inflight), connected=m.connected, last_error=m.last_error)

    # -- callbacks from paho's thread ------------------------------------------------------------

    def _on_ack(self, tag: str, ok: bool) -> None:
        row_id = int(tag)
        with self._cv:
            self._inflight.discard(row_id)
            self._held_back.discard(row_id)
            if ok:
                self._acked += 1
                self._acked_ids.append(row_id)
            else:
                self._refused += 1
                if self._rewind_to is None or row_id - 1 < self._rewind_to:
                    self._rewind_to = row_id - 1
                    self._rewind_at = time.monotonic() + self._refused_retry_s
            self._cv.notify_all()

    def _status_extra(self) -> dict[str, Any]:
        o = self.outbox.stats()
        return {"outbox_pending": o.rows, "outbox_evicted": o.evicted_total}

    # -- the forwarder thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.forwarder_passes += 1
                self.last_progress = time.monotonic()
                self._delete_acked()
                batch = self._rows_to_send()
                if not batch:
                    with self._cv:
                        # wait while blocked (disconnected, resends unsettled, window full) even if new rows
                        # came in, or while there is nothing new: never spin (acks and commits wake us)
                        if not self._stop.is_set() and not self._acked_ids and (self._blocked or not self._new_rows):
                            self._cv.wait(0.2)
                    continue
                for row in batch:
                    snapshot = row.event_id.endswith(SNAPSHOT_SUFFIX)
                    if not self.mqtt.publish_raw(
                            row.topic, row.payload, str(row.id),
                            content_type="image/jpeg" if snapshot else "application/json",
                            event_id=row.event_id.removesuffix(SNAPSHOT_SUFFIX) if snapshot else None):
                        with self._cv:
                            self._inflight.discard(row.id)
                            self._rewind(row.id - 1)  # paho's queue is full: send this one again later
                        break
                    if row.id <= self._replay_limit:
                        with self._cv:
                            self._redelivered += 1
                self.outbox.mark_sent(batch[-1].id)
        except Exception:  # noqa: BLE001  a bug here must not silently stop delivery
            log.exception("outbox forwarder stopped by an error; events stay in the outbox")

    def _rewind(self, to: int) -> None:
        """Caller holds the lock."""
        self._last_sent = min(self._last_sent, to)

    def _rows_to_send(self) -> list[Any]:
        """Pick the next rows to send, respecting connection state, the window and ordering."""
        m = self.mqtt.stats()
        with self._cv:
            if m.connects != self._connects_seen:  # (re)connected since the last look
                self._connects_seen = m.connects
                self._held_back = set(self._inflight)  # paho resends these itself; let them settle first
                if m.connects > 1:
                    self._resent += len(self._held_back)
                self._held_since = time.monotonic()
            if self._held_back and time.monotonic() - self._held_since > self._hold_timeout_s:
                log.warning("%d event(s) resent after a reconnect were not acknowledged within %.0f s; "
                            "sending them again from the outbox", len(self._held_back), self._hold_timeout_s)
                self._last_sent = min(self._last_sent, min(self._held_back) - 1)
                self._inflight -= self._held_back
                self._held_back = set()
            self._blocked = not m.connected or bool(self._held_back)
            if self._blocked:
                return []
            if self._rewind_to is not None and time.monotonic() >= self._rewind_at and not self._inflight:
                self._last_sent = min(self._last_sent, self._rewind_to)
                self._rewind_to = None
            room = self._window - len(self._inflight)
            if room <= 0:
                self._blocked = True
                return []
            self._new_rows = False
            after = self._last_sent
        rows = self.outbox.next_rows(after, room)
        with self._cv:
            for row in rows:
                self._inflight.add(row.id)
            if rows:
                self._last_sent = rows[-1].id
        return rows

    def _delete_acked(self) -> None:
        with self._cv:
            ids, self._acked_ids = self._acked_ids, []
        if ids:
            self.outbox.delete(ids)
            with self._cv:
                self._cv.notify_all()
