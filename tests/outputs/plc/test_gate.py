"""The trigger gate on its own: no frame while no trigger is pending; then the first frame captured at or after
the trigger (older ones skipped), once."""

from __future__ import annotations

import collections
import datetime

import numpy as np

from agent.core.frame import Frame
from agent.outputs.plc.gate import TriggerGate


class Frames:
    """A frame queue that hands out the frames it was given, in order (captured at ``monotonic`` = 1, 2, ...)."""

    def __init__(self, n: int) -> None:
        image = np.zeros((4, 4, 3), np.uint8)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.frames = collections.deque(Frame("cam1", i, now, float(i), image) for i in range(1, n + 1))

    def take(self, timeout: float) -> Frame | None:
        return self.frames.popleft() if self.frames else None

    @property
    def ended(self) -> bool:
        return not self.frames


def test_nothing_until_a_trigger_then_the_first_frame_at_or_after_it() -> None:
    inner = Frames(6)
    gate = TriggerGate(inner)
    assert gate.take(0.0) is None and gate.take(0.01) is None
    assert len(inner.frames) == 6  # untouched while no trigger is pending
    gate.arm(3.0)
    frame = gate.take(0.0)
    assert frame is not None and frame.sequence == 3 and gate.released == 3
    assert gate.skipped == 2  # frames 1 and 2 were captured before the trigger
    assert gate.take(0.0) is None  # one frame per trigger
    gate.arm(2.5)  # a trigger older than the frames left: the next one
    frame = gate.take(0.0)
    assert frame is not None and frame.sequence == 4


def test_a_disarmed_gate_hands_out_nothing() -> None:
    gate = TriggerGate(Frames(3))
    gate.arm(1.0)
    gate.disarm()
    assert gate.take(0.0) is None and not gate.armed
    assert not gate.ended
