"""Each camera's state in the retained device status, and a rate-limited republisher for it.

The retained ``<prefix>/<device>/status`` document carries one entry per configured camera
(``proto/mqtt/status.v1.schema.json``)::

    "cameras": {"cam1": {"state": "reconnecting", "reason": "camera source 'rtsp://…': no frame within 5 s …",
                         "since": "2026-11-22T03:04:05.123456Z"}}

:class:`CameraStatusBoard` is the pure part: the latest state of every camera, fed by the grabbers'
``on_state`` callbacks (on their threads; :meth:`CameraStatusBoard.report` only takes a lock). Each
grabber reports through a *source* key the service attaches to the camera; a report from any other
key is ignored, so a camera removed by a reload, or the old grabber of a camera a reload restarted,
can neither resurrect nor overwrite an entry.

:class:`StatusRepublisher` turns changes into retained republishes on its own thread, so a grabber
never waits on the network, and bounds the rate: **at most one republish per** ``interval_s``
**(default 1 s) for the whole device** (stricter than per camera; one document holds every camera).
The first change after a quiet interval goes out at once; the changes that follow within the
interval are folded into one republish at its end, which carries every camera's latest state. So
a flapping camera costs the broker at most one message a second, an intermediate state shorter
than the interval may never be seen, and the latest state is always sent (while the broker is away
nothing is sent: the publisher sends the whole current status on every reconnect).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.core.event import rfc3339
from agent.redact import redact

__all__ = ["CameraStatus", "CameraStatusBoard", "MAX_REASON_CHARS", "REASON_STATES", "StatusRepublisher"]

log = logging.getLogger(__name__)

REASON_STATES = ("reconnecting", "failed")
"""The states whose ``reason`` says what went wrong; it is null in the others."""

MAX_REASON_CHARS = 300
"""Longer reasons are cut (with '…'), so that one camera's error text cannot bloat the status."""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class CameraStatus:
    """One camera's state (a grabber state: ``connecting``, ``online``, ``reconnecting``, ``ended``,
    ``failed``, ``stopped``), why (the error text for ``reconnecting``/``failed``, else None) and
    since when it has been in that state (UTC)."""

    state: str
    reason: str | None
    since: datetime.datetime

    def to_payload(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "since": rfc3339(self.since)}


class CameraStatusBoard:
    """The latest :class:`CameraStatus` of every attached camera, in the order they were attached.

    ``on_change()`` is called (outside the lock, on the caller's thread) after every change; it must
    be quick: :meth:`StatusRepublisher.poke` is.
    """

    def __init__(self, *, now: Callable[[], datetime.datetime] = _utcnow,
                 on_change: Callable[[], None] | None = None) -> None:
        self._now = now
        self.on_change = on_change
        self._lock = threading.Lock()
        self._cameras: dict[str, CameraStatus] = {}
        self._sources: dict[str, object] = {}  # camera id -> the key its current grabber reports with

    def attach(self, camera_id: str, source: object) -> None:
        """From now on ``camera_id``'s state comes from reports with key ``source`` (its new grabber);
        it shows as ``connecting`` until the first report."""
        with self._lock:
            self._sources[camera_id] = source
            self._cameras[camera_id] = CameraStatus("connecting", None, self._now())
        self._changed()

    def detach(self, camera_id: str) -> None:
        """The camera is gone (removed by a reload): it leaves the status; later reports are ignored."""
        with self._lock:
            self._sources.pop(camera_id, None)
            gone = self._cameras.pop(camera_id, None) is not None
        if gone:
            self._changed()

    def report(self, source: object, camera_id: str, state: str, reason: str | None) -> bool:
        """A grabber's state change; True when it changed the board. ``since`` moves only when the
        state does (a new reason for the same state keeps it). The reason is kept for the states that
        have one (``reconnecting``, ``failed``) and cut to :data:`MAX_REASON_CHARS`; other states have none."""
        if state in REASON_STATES:
            reason = redact(reason or "no reason given")  # a source string may carry credentials
            if len(reason) > MAX_REASON_CHARS:
                reason = reason[:MAX_REASON_CHARS - 1] + "…"
        else:
            reason = None  # e.g. "stopped" right after a failure: the failure was reported already
        with self._lock:
            if camera_id not in self._sources or self._sources[camera_id] is not source:
                return False  # a detached camera, or the old grabber of a restarted one
            old = self._cameras[camera_id]
            if old.state == state and old.reason == reason:
                return False
            since = old.since if old.state == state else self._now()
            self._cameras[camera_id] = CameraStatus(state, reason, since)
        self._changed()
        return True

    def snapshot(self) -> dict[str, CameraStatus]:
        with self._lock:
            return dict(self._cameras)

    def status_fields(self) -> dict[str, Any]:
        """The fields this board adds to the retained ``online`` status: ``{"cameras": {...}}``."""
        return {"cameras": {cam: status.to_payload() for cam, status in self.snapshot().items()}}

    def _changed(self) -> None:
        callback = self.on_change
        if callback is not None:
            callback()


class StatusRepublisher:
    """Calls ``republish()`` on a daemon thread named ``status-republish`` after :meth:`poke`, at most once
    per ``interval_s``: at once when the last call was at least ``interval_s`` ago, else when that interval
    ends (every poke meanwhile folds into that one call). ``republish`` must not block for long (paho's
    ``publish`` only queues); an exception from it is logged and the thread goes on."""

    def __init__(self, republish: Callable[[], None], *, interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._republish = republish
        self.interval_s = interval_s
        self._clock = clock
        self._cond = threading.Condition()
        self._pending = False
        self._stopped = False
        self._last: float | None = None  # clock() of the last republish
        self._thread: threading.Thread | None = None
        self.pokes = 0
        self.republished = 0

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the status republisher was already started")
        self._thread = threading.Thread(target=self._run, name="status-republish", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Something in the status changed: republish soon. Never blocks (a lock held for a few lines)."""
        with self._cond:
            self.pokes += 1
            self._pending = True
            self._cond.notify_all()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the thread; a pending change is dropped (the caller is about to publish ``offline``).
        True when the thread has ended."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._pending:
                        due = self._last + self.interval_s if self._last is not None else self._clock()
                        wait = due - self._clock()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stopped:
                    return
                self._pending = False
                self._last = self._clock()
                self.republished += 1
            try:
                self._republish()
            except Exception:  # a publishing bug must not end status updates for good
                log.exception("republishing the device status failed")
