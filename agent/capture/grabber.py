"""The grabber: one thread per camera that reads frames and hands them on.

Two hand-off modes, chosen by ``camera.realtime`` (default: ``source.is_live``):

* **realtime** (cameras, streams): a one-slot buffer that keeps only the newest
  frame. A frame the consumer did not take in time is overwritten and counted in
  ``dropped``; inference never falls behind real time.
* **every frame** (files, synthetic): a bounded queue of two; the grabber blocks
  until the consumer has taken a frame (back-pressure), nothing is dropped, so N
  frames in give N frames out.

``camera.fps`` limits the rate: a non-live source is *paced* (played at that rate
in real time; without ``camera.fps`` a source's own ``nominal_fps``, e.g. the
``fps=`` of ``synthetic://``, is used); frames of a live source above that rate
are *skipped* (counted in ``dropped`` and in ``skipped_fps``).

Live sources that fail (on open or read) are re-opened with capped exponential
backoff and ±20 % jitter. State changes go to ``on_state(camera_id, state, reason)``:
``connecting`` → ``online`` → (``reconnecting`` → ``online``)* → ``stopped``;
a finite source ends in ``ended``, a non-live source that cannot be opened in
``failed`` (no retry). ``on_state`` is called from the grabber thread.

Counters (see :class:`GrabberStats`): every frame read gets the next ``sequence``
(corrupt and dropped ones included, so gaps show losses), hence
``frames_read = delivered + dropped + corrupt + frames waiting in the buffer``.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from agent.capture.decoders import camera_source
from agent.capture.frame_memory import keep_frame_memory
from agent.capture.sources import FrameSource
from agent.config.models import CameraConfig
from agent.core.frame import Frame, FrameTruth
from agent.core.picture import Picture
from agent.core.priority import yield_to_model
from agent.errors import SourceError

__all__ = ["Clock", "Grabber", "GrabberStats", "StateCallback", "STATES"]

logger = logging.getLogger(__name__)

STATES = ("connecting", "online", "reconnecting", "ended", "failed", "stopped")
"""Every state a grabber reports, in the order they usually happen."""

StateCallback = Callable[[str, str, "str | None"], None]
"""``on_state(camera_id, state, reason)``; reason is the error for reconnecting/failed."""

_CORRUPT_LOG_INTERVAL_S = 10.0
_JITTER = 0.2
_QUEUE_DEPTH = 2  # frames buffered in every-frame mode

T = TypeVar("T")


class Clock(Protocol):
    """What the grabber needs of a clock; the ``time`` module is one."""

    def monotonic(self) -> float: ...


@dataclasses.dataclass(frozen=True)
class GrabberStats:
    """A snapshot of one grabber's counters.

    ``frames_read``: frames the source returned (the last sequence number);
    ``delivered``: frames handed to the consumer; ``dropped``: frames read but never
    delivered (overwritten in realtime mode or skipped for the fps limit);
    ``skipped_fps``: the part of ``dropped`` skipped for the fps limit;
    ``corrupt``: frames that could not be decoded (not in ``dropped``);
    ``reconnects``: attempts to re-open a live source after it failed;
    ``state``: the last state reported (``new`` before :meth:`Grabber.start`).
    """

    camera_id: str
    frames_read: int
    delivered: int
    dropped: int
    skipped_fps: int
    corrupt: int
    reconnects: int
    state: str
    last_error: str | None


class Grabber:
    """Reads one camera in a daemon thread named ``grab-<camera id>``.

    The source is constructed (not opened) here, so a spec no source understands
    raises :class:`SourceError` at once. Call :meth:`start`, then :meth:`take`
    frames until :attr:`ended`; :meth:`stop` ends it.
    """

    def __init__(
        self,
        camera: CameraConfig,
        *,
        source_factory: Callable[[str], FrameSource] | None = None,
        clock: Clock = time,
        on_state: StateCallback | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.camera = camera
        # the decoder camera.decoder asks for (agent.capture.decoders); tests hand in their own factory
        self.source = camera_source(camera) if source_factory is None else source_factory(camera.source)
        self._clock = clock
        self._on_state = on_state
        self._rng = rng or random.Random()
        self.realtime: bool = camera.realtime if camera.realtime is not None else self.source.is_live
        self._live = self.source.is_live
        nominal = getattr(self.source, "nominal_fps", None)
        self.fps_limit: float | None = camera.fps or (
            None if self._live or not isinstance(nominal, (int, float)) or nominal <= 0 else float(nominal))

        self._cond = threading.Condition()
        self._buffer: collections.deque[Frame] = collections.deque()
        self._capacity = 1 if self.realtime else _QUEUE_DEPTH
        self._stop = threading.Event()
        self._done = False  # the thread will put no more frames in the buffer
        self._thread: threading.Thread | None = None

        # counters, guarded by _cond
        self._sequence = 0
        self._delivered = 0
        self._dropped = 0
        self._skipped_fps = 0
        self._corrupt = 0
        self._reconnects = 0
        self._state = "new"
        self._last_error: str | None = None
        self._corrupt_logged_at: float | None = None
        self._corrupt_unlogged = 0
        # progress, for the watchdog and /healthz (agent.ops.stages): since when the thread has been
        # inside a source call (open/read) that has not returned; None while it waits (hand-off, backoff)
        self.busy_since: float | None = None
        self.busy_doing = ""

    # ------------------------------------------------------------------ consumer side

    def start(self) -> None:
        """Start the grabber thread. A grabber runs once; make a new one to restart."""
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError(f"grabber for camera {self.camera.id!r} was already started or stopped")
        keep_frame_memory()  # every frame's buffer from the heap, not a fresh mmap (agent.capture.frame_memory)
        self._thread = threading.Thread(target=self._run, name=f"grab-{self.camera.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it.

        Returns True when the thread has finished. Waits in a hand-off, a backoff or
        a pacing sleep are interrupted at once; a read blocked inside the source
        (a stream's read timeout) is not, and ``stop`` then returns False in time.
        """
        self._stop.set()
        with self._cond:
            if self._thread is None:  # never started: nothing will come
                self._done = True
            self._cond.notify_all()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def take(self, timeout: float | None = None) -> Frame | None:
        """The newest frame (realtime) or the next frame (every-frame mode); ``None``
        when none came within ``timeout`` seconds or the grabber has ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._buffer:
                if self._done or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame = self._buffer.popleft()
            self._delivered += 1
            self._cond.notify_all()  # a producer may wait for room
            return frame

    @property
    def ended(self) -> bool:
        """True when no frame will ever come again (the source ended, failed or the
        grabber was stopped) and nothing is left to take."""
        with self._cond:
            return self._done and not self._buffer

    @property
    def alive(self) -> bool:
        """True while the grabber thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def state(self) -> str:
        with self._cond:
            return self._state

    def stats(self) -> GrabberStats:
        with self._cond:
            return GrabberStats(
                camera_id=self.camera.id,
                frames_read=self._sequence,
                delivered=self._delivered,
                dropped=self._dropped,
                skipped_fps=self._skipped_fps,
                corrupt=self._corrupt,
                reconnects=self._reconnects,
                state=self._state,
                last_error=self._last_error,
            )

    # ------------------------------------------------------------------ grabber thread

    def _set_state(self, state: str, reason: str | None = None) -> None:
        with self._cond:
            if state == self._state and state != "reconnecting":
                return
            changed = state != self._state
            self._state = state
            if reason is not None:
                self._last_error = reason
        if not changed:
            return
        level = logging.WARNING if state in ("reconnecting", "failed") else logging.INFO
        logger.log(level, "camera %s (%s): %s%s", self.camera.id, self.source.describe(), state,
                   f": {reason}" if reason else "")
        if self._on_state is not None:
            try:
                self._on_state(self.camera.id, state, reason)
            except Exception:  # a listener's bug must not kill the camera
                logger.exception("on_state callback failed for camera %s (state %s)", self.camera.id, state)

    def _run(self) -> None:
        yield_to_model()  # decoding feeds the model: it must not take the model's cores (agent.core.priority)
        final = "stopped"
        try:
            final = self._loop()
        except Exception as exc:  # never let the thread die silently
            logger.exception("grabber for camera %s crashed", self.camera.id)
            final = "failed"
            with self._cond:
                self._last_error = f"internal error: {exc!r}"
        finally:
            self.source.close()
            with self._cond:
                self._done = True
                self._cond.notify_all()
            self._flush_corrupt_log()
            self._set_state("stopped" if self._stop.is_set() and final != "ended" else final,
                            self._last_error if final == "failed" else None)

    def _loop(self) -> str:
        """Open, read, reconnect until the source ends or stop(); returns the final state."""
        attempt = 0  # failed attempts since the last good frame
        self._set_state("connecting")
        while not self._stop.is_set():
            if attempt:
                with self._cond:
                    self._reconnects += 1
            try:
                self._in_source("opening the source", self.source.open)
            except SourceError as exc:
                if not self._live:
                    self._set_state("failed", str(exc))
                    return "failed"
                reason = str(exc)
            else:
                self._set_state("online")
                outcome, got_frame, reason = self._read_loop()
                self.source.close()
                if outcome != "broken":
                    return outcome
                if not self._live:
                    self._set_state("failed", reason)
                    return "failed"
                if got_frame:
                    attempt = 0
            if self._backoff(attempt, reason):
                return "stopped"
            attempt += 1
        return "stopped"

    def _read_loop(self) -> tuple[str, bool, str]:
        """Read until the end, stop() or a failure: (``ended``/``stopped``/``broken``,
        whether a good frame came, the failure's reason)."""
        got_frame = False
        period = 1.0 / self.fps_limit if self.fps_limit else 0.0
        next_due: float | None = None
        if self._live and period and hasattr(self.source, "wanted"):  # a frame the limit drops is not converted
            self.source.wanted = lambda: next_due is None or self._clock.monotonic() >= next_due - 0.1 * period
        while not self._stop.is_set():
            try:
                item = self._in_source("reading a frame", self.source.read)
            except SourceError as exc:
                return "broken", got_frame, str(exc)
            if item is None:
                if not self._live:
                    return "ended", got_frame, ""
                return "broken", got_frame, f"camera source {self.source.describe()!r}: the stream ended"
            with self._cond:
                self._sequence += 1
                sequence = self._sequence
            picture = item.picture  # not item.image: a lazy picture is converted only when something needs it
            if item.skipped:
                got_frame = True
                with self._cond:
                    self._dropped += 1
                    self._skipped_fps += 1
                continue
            if item.corrupt or picture is None:
                self._count_corrupt()
                continue
            got_frame = True
            if period:
                now = self._clock.monotonic()
                if next_due is None:
                    next_due = now
                if self._live:
                    # skip frames above the limit; 10 % slack so that a 30 fps camera
                    # limited to 10 fps gives 10, not 7.5
                    if now < next_due - 0.1 * period:
                        with self._cond:
                            self._dropped += 1
                            self._skipped_fps += 1
                        continue
                    next_due = max(next_due + period, now - period)
                else:
                    # pace: wait until this frame is due; after a stall, do not burst
                    if next_due > now and self._stop.wait(next_due - now):
                        return "stopped", got_frame, ""
                    next_due = max(next_due + period, self._clock.monotonic() - period)
            if not self._hand_off(self._make_frame(sequence, picture, item.truth)):
                return "stopped", got_frame, ""
        return "stopped", got_frame, ""

    def _in_source(self, doing: str, call: Callable[[], T]) -> T:
        """``call()``, with ``busy_since`` set while it runs (a source call that never returns is how a
        stuck camera shows)."""
        self.busy_doing = doing
        self.busy_since = time.monotonic()
        try:
            return call()
        finally:
            self.busy_since = None

    def _make_frame(self, sequence: int, picture: Picture, truth: FrameTruth | None) -> Frame:
        return Frame(
            camera_id=self.camera.id,
            sequence=sequence,
            captured_at=datetime.datetime.now(datetime.timezone.utc),
            monotonic=self._clock.monotonic(),
            picture=picture,
            truth=truth,
        )

    def _hand_off(self, frame: Frame) -> bool:
        """Put ``frame`` in the buffer; False when stopped while waiting for room."""
        with self._cond:
            if self.realtime:
                if self._buffer:
                    self._buffer.clear()  # the consumer did not take it in time
                    self._dropped += 1
            else:
                while len(self._buffer) >= self._capacity:
                    if self._stop.is_set():
                        return False
                    self._cond.wait()
            self._buffer.append(frame)
            self._cond.notify_all()
            return True

    def _backoff(self, attempt: int, reason: str) -> bool:
        """Report ``reconnecting`` and wait before the next attempt; True when stopped."""
        base = min(self.camera.reconnect_initial_s * (2 ** min(attempt, 62)), self.camera.reconnect_max_s)
        delay = base * self._rng.uniform(1 - _JITTER, 1 + _JITTER)
        self._set_state("reconnecting", reason)
        logger.info("camera %s: retrying in %.2f s (attempt %d): %s",
                    self.camera.id, delay, attempt + 1, reason)
        return self._stop.wait(delay)

    def _count_corrupt(self) -> None:
        now = self._clock.monotonic()
        with self._cond:
            self._corrupt += 1
            self._corrupt_unlogged += 1
            due = self._corrupt_logged_at is None or now - self._corrupt_logged_at >= _CORRUPT_LOG_INTERVAL_S
            if not due:
                return
            count, self._corrupt_unlogged = self._corrupt_unlogged, 0
            self._corrupt_logged_at = now
            total = self._corrupt
        logger.warning("camera %s (%s): skipped %d corrupt frame(s) (%d in all)",
                       self.camera.id, self.source.describe(), count, total)

    def _flush_corrupt_log(self) -> None:
        with self._cond:
            count, self._corrupt_unlogged = self._corrupt_unlogged, 0
            total = self._corrupt
        if count:
            logger.warning("camera %s (%s): skipped %d corrupt frame(s) (%d in all)",
                           self.camera.id, self.source.describe(), count, total)
