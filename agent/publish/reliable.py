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

No message may block the ones behind it:

* one larger than the broker's Maximum Packet Size (MQTT 5 CONNACK) is never sent:
  a snapshot is re-encoded smaller until it fits, or dropped and counted; a tag
  event goes to the outbox's dead letters (cause ``too_large``);
* one the broker refuses (PUBACK reason code >= 0x80) is retried with backoff by
  :class:`agent.publish.refusals.RefusalGate`, its topic's later messages waiting
  meanwhile (so the delivered ones keep their order; other topics carry on), and
  dead-lettered (cause ``refused 0x87`` etc.) after ``refused_tries`` tries.

Dead letters are kept, counted (stats, the retained status, ``/metrics``) and
logged at most once a minute per cause with the limit and size or the reason code.
A message refused while later messages of its topic were already in flight can
arrive after them if it is accepted on a retry (at most ``inflight`` of them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from paho.mqtt.reasoncodes import ReasonCode

from agent.core.event import TagEvent
from agent.core.ports import ReliableStats
from agent.core.priority import yield_to_model
from agent.publish.limits import LogThrottle
from agent.publish.mqtt_publisher import MqttPublisher
from agent.publish.outbox import Outbox, OutboxRow, OutboxStats
from agent.publish.refusals import RefusalGate
from agent.publish.snapshot import shrink_jpeg
from agent.publish.topics import snapshot_topic, tags_topic

log = logging.getLogger(__name__)

SNAPSHOT_SUFFIX = "/snapshot"  # outbox rows holding a snapshot carry "<event_id>/snapshot"


class ReliablePublisher:
    def __init__(
        self,
        outbox: Outbox,
        mqtt: MqttPublisher,
        *,
        topic_prefix: str,
        inflight: int = 64,
        refused_tries: int = 3,
        refused_backoff_s: float = 1.0,
        hold_timeout_s: float = 30.0,
        stats_topic: str | None = None,
    ) -> None:
        if inflight < 1:
            raise ValueError(f"inflight must be at least 1, got {inflight}")
        self.outbox = outbox
        self.mqtt = mqtt
        self._prefix = topic_prefix
        self._window = inflight
        self._gate = RefusalGate(max_tries=refused_tries, backoff_s=refused_backoff_s)
        self._throttle = LogThrottle(log)
        self._hold_timeout_s = hold_timeout_s
        self._stats_topic = stats_topic
        self._evicted_reported = (outbox.stats().evicted_total, outbox.stats().dead_letters)
        self._cv = threading.Condition()
        self._inflight: dict[int, str] = {}  # row id -> topic, sent and not yet settled
        self._held_back: set[int] = set()  # in flight at the last disconnect: must settle first
        self._acked_ids: list[int] = []  # acknowledged, not yet deleted
        self._last_sent = 0  # highest row id handed to MQTT in this process
        self._ready: list[int] = []  # row ids to send before the cursor's (retries, released parked rows)
        self._to_dead: list[tuple[int, str, str, int]] = []  # (row id, cause, detail, tries) from paho's thread
        self._dead_detail: dict[str, str] = {}  # cause -> the latest detail, for the status
        self._shrunk = self._snap_dropped = 0
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
        return self.publish_events([event])[0]

    def publish_events(self, events: Sequence[TagEvent]) -> list[int]:
        """Commit ``events`` to the outbox in one transaction (all or none), in order, and return their row ids:
        the inference loop's way for the frames of one model batch (one commit and one wake-up of the
        forwarder for all of them)."""
        ids = self.outbox.append_many([(e.event_id, e.camera, tags_topic(self._prefix, e.device, e.camera),
                                        e.to_json()) for e in events])
        if ids:
            with self._cv:
                self._new_rows = True
                self._cv.notify_all()
        return ids

    def publish_snapshot(self, camera: str, event_id: str, jpeg: bytes, durable: bool) -> bool:
        """A snapshot: through the outbox when ``durable``, else sent only while connected."""
        topic = snapshot_topic(self._prefix, self.mqtt.device_id, camera)
        fitted = self._fit_snapshot(topic, event_id, jpeg)
        if fitted is None:
            return False
        if not durable:
            return self.mqtt.publish_blob(topic, fitted, "image/jpeg", event_id)
        self.outbox.append(event_id + SNAPSHOT_SUFFIX, camera, topic, fitted)
        with self._cv:
            self._new_rows = True
            self._cv.notify_all()
        return True

    def publish_stats(self, doc: dict[str, Any]) -> None:
        """Periodic counters (best effort); the retained status is refreshed when evictions grew."""
        if self._stats_topic is not None:
            self.mqtt.publish_stats(self._stats_topic, doc)
        o = self.outbox.stats()
        if (o.evicted_total, o.dead_letters) != self._evicted_reported:
            self._evicted_reported = (o.evicted_total, o.dead_letters)
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

    @property
    def connects(self) -> int:
        """Successful connections to the broker so far (more than 1: it reconnected)."""
        return self.mqtt.stats().connects

    def stats(self) -> ReliableStats:
        o: OutboxStats = self.outbox.stats()
        m = self.mqtt.stats()
        with self._cv:
            return ReliableStats(
                committed=o.appended, acked=self._acked, evicted=o.evicted, evicted_total=o.evicted_total,
                redelivered=self._redelivered, resent=self._resent, refused=self._refused, pending=o.rows,
                pending_bytes=o.bytes, inflight=len(self._inflight), connected=m.connected, last_error=m.last_error,
                dead_letters=o.dead_letters, dead_lettered=o.dead_lettered, dead_by_cause=o.dead_by_cause,
                snapshots_shrunk=self._shrunk, snapshots_dropped=self._snap_dropped)

    # -- callbacks from paho's thread ------------------------------------------------------------

    def _on_ack(self, tag: str, reason: ReasonCode) -> None:
        row_id = int(tag)
        with self._cv:
            topic = self._inflight.pop(row_id, None)
            self._held_back.discard(row_id)
            if not reason.is_failure:
                self._acked += 1
                self._acked_ids.append(row_id)
                if topic is not None:
                    self._gate.accepted(topic, row_id)
            else:
                self._refused += 1
                if topic is not None:  # None: given up on after a reconnect; the cursor sends it again
                    verdict = self._gate.refused(topic, row_id, time.monotonic())
                    if verdict.dead:
                        self._to_dead.append((row_id, f"refused 0x{reason.value:02X}",
                                              f"the broker refused it {verdict.tries} time(s): {reason} "
                                              f"(PUBACK reason code 0x{reason.value:02X})", verdict.tries))
            # wake the forwarder only when the ack changes what it may do now: a refusal, a window or a
            # reconnect hold it waits on, parked messages, or the last message in flight (its rows deleted at
            # once, for flush()). Other acks are deleted on its next pass (new rows wake it, or 0.2 s), so a
            # batch of events costs one or two passes, not one per ack.
            if reason.is_failure or self._blocked or not self._inflight or self._gate.waiting():
                self._cv.notify_all()

    def _status_extra(self) -> dict[str, Any]:
        o = self.outbox.stats()
        extra: dict[str, Any] = {"outbox_pending": o.rows, "outbox_evicted": o.evicted_total}
        if o.dead_letters:
            extra["outbox_dead_letters"] = o.dead_letters
            extra["outbox_dead_letter_causes"] = dict(o.dead_by_cause)
            with self._cv:
                details = [self._dead_detail[c] for c, _ in o.dead_by_cause if c in self._dead_detail]
            if details:
                extra["outbox_dead_letter_reason"] = details[-1]
        return extra

    # -- the forwarder thread ------------------------------------------------------------------

    def _run(self) -> None:
        yield_to_model()  # draining the outbox must not take the model's cores (agent.core.priority)
        try:
            while not self._stop.is_set():
                self.forwarder_passes += 1
                self.last_progress = time.monotonic()
                self._delete_acked()
                self._move_refused_to_dead()
                batch, cursor_end = self._rows_to_send()
                if not batch:
                    with self._cv:
                        # wait while blocked (disconnected, resends unsettled, window full) even if new rows
                        # came in, or while there is nothing new: never spin (acks and commits wake us)
                        if (not self._stop.is_set() and not self._acked_ids and not self._to_dead
                                and cursor_end is None and (self._blocked or not self._new_rows)):
                            self._cv.wait(min(0.2, self._gate.next_retry_in(time.monotonic()) or 0.2))
                    if cursor_end is not None:
                        self.outbox.mark_sent(cursor_end)
                    continue
                for i, (row, from_cursor) in enumerate(batch):
                    if not self._send(row):
                        with self._cv:  # paho's queue is full: send these again later, in order
                            self._ready[:0] = [r.id for r, c in batch[i:] if not c]
                            first = next((r.id for r, c in batch[i:] if c), None)
                            if first is not None:
                                self._rewind(first - 1)
                        break
                    if from_cursor and row.id <= self._replay_limit:
                        with self._cv:
                            self._redelivered += 1
                if cursor_end is not None:
                    self.outbox.mark_sent(cursor_end)
        except Exception:  # noqa: BLE001  a bug here must not silently stop delivery
            log.exception("outbox forwarder stopped by an error; events stay in the outbox")

    def _send(self, row: OutboxRow) -> bool:
        """Hand one row to MQTT unless it can never fit (then shrink, drop or dead-letter it: handled, True).
        False when paho's queue is full (nothing was sent)."""
        snapshot = row.event_id.endswith(SNAPSHOT_SUFFIX)
        event_id = row.event_id.removesuffix(SNAPSHOT_SUFFIX) if snapshot else None
        content_type = "image/jpeg" if snapshot else "application/json"
        payload = row.payload
        size = self.mqtt.oversize(row.topic, len(row.payload), content_type, event_id)
        if size is not None and not snapshot:
            self._dead_letter([row.id], "too_large", f"a message of {size} bytes is larger than the broker's "
                              f"maximum packet size of {self.mqtt.limits.max_packet_size} bytes", 0, row.topic)
            return True
        if size is not None:
            fitted = self._fit_snapshot(row.topic, event_id or row.event_id, row.payload)
            if fitted is None:
                self.outbox.discard([row.id])
                return True
            payload = fitted
        with self._cv:
            self._inflight[row.id] = row.topic
        if not self.mqtt.publish_raw(row.topic, payload, str(row.id), content_type=content_type, event_id=event_id):
            with self._cv:
                self._inflight.pop(row.id, None)
            return False
        return True

    def _fit_snapshot(self, topic: str, event_id: str, jpeg: bytes) -> bytes | None:
        """``jpeg`` as it is, or re-encoded smaller to fit the broker's packet limit; None (counted, logged)
        when it cannot fit."""
        size = self.mqtt.oversize(topic, len(jpeg), "image/jpeg", event_id)
        if size is None:
            return jpeg
        budget = len(jpeg) - (size - (self.mqtt.limits.max_packet_size or 0)) - 3  # -3: a shorter length field
        smaller = shrink_jpeg(jpeg, budget) if budget > 0 else None
        with self._cv:
            if smaller is not None:
                self._shrunk += 1
            else:
                self._snap_dropped += 1
            shrunk, dropped = self._shrunk, self._snap_dropped
        if smaller is None:
            self._throttle.warning("snapshot-too-large", "snapshot of event %s dropped: %d bytes as a packet, larger "
                                   "than the broker's maximum packet size of %s bytes even re-encoded smaller "
                                   "(%d dropped, %d shrunk so far)", event_id, size,
                                   self.mqtt.limits.max_packet_size, dropped, shrunk)
        else:
            self._throttle.warning("snapshot-shrunk", "snapshots are re-encoded smaller to fit the broker's "
                                   "maximum packet size of %s bytes (event %s: %d -> %d bytes; %d shrunk so far)",
                                   self.mqtt.limits.max_packet_size, event_id, len(jpeg), len(smaller), shrunk)
        return smaller

    def _dead_letter(self, ids: list[int], cause: str, detail: str, tries: int, topic: str) -> None:
        moved = self.outbox.dead_letter(ids, cause, detail, tries)
        if not moved:
            return
        with self._cv:
            new_cause = cause not in self._dead_detail
            self._dead_detail[cause] = detail
        total = dict(self.outbox.stats().dead_by_cause).get(cause, 0)
        self._throttle.warning(f"dead {cause}", "moved %d message(s) of %s to the outbox's dead letters (%s): %s; "
                               "%d dead letter(s) with this cause; the messages behind them go on. See `edge-agent "
                               "outbox show`; `edge-agent outbox requeue` sends them again once the broker is fixed",
                               moved, topic, cause, detail, total)
        if new_cause:
            self.mqtt.republish_status()

    def _move_refused_to_dead(self) -> None:
        with self._cv:
            todo, self._to_dead = self._to_dead, []
        for row_id, cause, detail, tries in todo:
            rows = self.outbox.rows_by_id([row_id])
            if rows:
                self._dead_letter([row_id], cause, detail, tries, rows[0].topic)

    def _rewind(self, to: int) -> None:
        """Caller holds the lock."""
        self._last_sent = min(self._last_sent, to)

    def _rows_to_send(self) -> tuple[list[tuple[OutboxRow, bool]], int | None]:
        """The next rows to send, each with whether it came from the cursor (rather than a retry or a
        released parked row), respecting connection state, the window and ordering; and the highest
        cursor row id read (None when none was)."""
        m = self.mqtt.stats()
        now = time.monotonic()
        with self._cv:
            if m.connects != self._connects_seen:  # (re)connected since the last look
                self._connects_seen = m.connects
                self._held_back = set(self._inflight)  # paho resends these itself; let them settle first
                if m.connects > 1:
                    self._resent += len(self._held_back)
                self._held_since = now
            if self._held_back and now - self._held_since > self._hold_timeout_s:
                log.warning("%d event(s) resent after a reconnect were not acknowledged within %.0f s; "
                            "sending them again from the outbox", len(self._held_back), self._hold_timeout_s)
                self._last_sent = min(self._last_sent, min(self._held_back) - 1)
                for row_id in self._held_back:
                    self._inflight.pop(row_id, None)
                    self._gate.retry_lost(row_id, now)
                self._held_back = set()
            self._blocked = not m.connected or bool(self._held_back)
            if self._blocked:
                return [], None
            room = min(self._window, self.mqtt.limits.receive_maximum) - len(self._inflight)
            if room <= 0:
                self._blocked = True
                return [], None
            self._ready += self._gate.due(now) + self._gate.release()
            ready, self._ready = self._ready[:room], self._ready[room:]
            self._new_rows = False
            after = self._last_sent
        batch = [(row, False) for row in self.outbox.rows_by_id(ready)] if ready else []
        if len(batch) < len(ready):  # some left the outbox while they waited (evicted): nothing waits for them
            with self._cv:
                for row_id in set(ready) - {row.id for row, _ in batch}:
                    self._gate.forget(row_id)
        room -= len(ready)
        if room <= 0:
            return batch, None
        rows = self.outbox.next_rows(after, room)
        with self._cv:
            for row in rows:
                if self._gate.holds(row.topic):
                    self._gate.park(row.topic, row.id)
                elif row.id not in self._inflight:
                    batch.append((row, True))
            if rows:
                self._last_sent = rows[-1].id
        return batch, rows[-1].id if rows else None
    def _delete_acked(self) -> None:
        with self._cv:
            ids, self._acked_ids = self._acked_ids, []
        if ids:
            self.outbox.delete(ids)
            with self._cv:
                self._cv.notify_all()
