"""A handshake camera's frames held back until the PLC triggers: a :class:`FrameQueue` in front of the grabber.

While no trigger is pending, ``take`` hands out nothing (the grabber keeps only its newest frame, so nothing
piles up). Once armed with a trigger time, it hands out the first frame captured at or after it (older ones are
skipped) and disarms; :attr:`TriggerGate.released` is that frame's sequence, so the handshake knows which
event is the trigger's.
"""

from __future__ import annotations

import threading
import time

from agent.core.frame import Frame
from agent.core.ports import FrameQueue

__all__ = ["TriggerGate"]


class TriggerGate:
    def __init__(self, inner: FrameQueue) -> None:
        self.inner = inner
        self._cond = threading.Condition()
        self._armed_at: float | None = None  # time.monotonic() of the trigger waiting for a frame
        self.released: int | None = None  # the sequence of the frame the last trigger took
        self.skipped = 0  # frames captured before a pending trigger, not inspected

    def arm(self, at: float) -> None:
        with self._cond:
            self._armed_at, self.released = at, None
            self._cond.notify_all()

    def disarm(self) -> None:
        with self._cond:
            self._armed_at = None

    @property
    def armed(self) -> bool:
        return self._armed_at is not None

    @property
    def ended(self) -> bool:
        return self.inner.ended

    def take(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._armed_at is None and timeout > 0:
                self._cond.wait(timeout)
            at = self._armed_at
        if at is None:
            return None
        while True:
            frame = self.inner.take(max(0.0, deadline - time.monotonic()))
            if frame is None:
                return None
            if frame.monotonic < at:
                self.skipped += 1
                continue
            with self._cond:
                if self._armed_at != at:  # disarmed (the trigger timed out) meanwhile
                    return None
                self._armed_at, self.released = None, frame.sequence
            return frame
