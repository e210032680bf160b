"""The PLC handshake as a state machine (pure logic: time comes in, the writes to make go out).

    READY ──trigger──► INSPECTING ──final verdict──► ACKING ──result_ack──► READY
      ▲                    │ result_timeout_s            │ ack_timeout_s
      └────── error 3 ─────┘                             └── error 2 ──► READY

On a trigger the agent clears ``trigger`` and ``trigger_ready`` and arms the camera's gate (the first frame
captured at or after the trigger is inspected). Once that frame's final verdict is known, the result signals
are written (``sequence`` last: the trigger's number), then ``result_ready``. On ``result_ack`` the agent clears
``result_ack`` and ``result_ready`` and raises ``trigger_ready`` again. A trigger while busy is refused: the
agent clears it and writes error 1. The codes are :class:`ErrorCode` (docs/plc.md).
"""

from __future__ import annotations

import dataclasses
import enum

from agent.outputs.plc.results import PlcResult, Value, values_of

__all__ = ["ErrorCode", "Handshake", "Phase", "Step", "WriteCounter"]


class ErrorCode(enum.IntEnum):
    NONE = 0
    TRIGGER_WHILE_BUSY = 1  # a trigger came while the previous part was still being inspected or acknowledged
    ACK_TIMEOUT = 2  # result_ready was not acknowledged within ack_timeout_s
    NO_RESULT = 3  # no final verdict for the triggered frame within result_timeout_s (camera down, VLM stuck)
    WRITE_REFUSED = 4  # the PLC refused a write (Modbus exception, OPC UA Bad status); the result was not delivered
    PLC_LOST = 5  # the connection dropped: results could not be written meanwhile
    QUEUE_FULL = 6  # write mode: results waited for the PLC longer than plc.queue allows; the oldest dropped


class Phase(enum.Enum):
    READY = "ready"
    INSPECTING = "inspecting"
    ACKING = "acking"


@dataclasses.dataclass
class Step:
    """What one input to the state machine asks of the I/O: signals to write, in order, and what happened."""

    writes: list[tuple[str, Value]] = dataclasses.field(default_factory=list)
    arm: float | None = None  # arm the camera's gate at this trigger time (time.monotonic())
    disarm: bool = False
    error: ErrorCode = ErrorCode.NONE
    delivered: bool = False  # a result was written (result_ready raised)


def error_writes(code: ErrorCode) -> list[tuple[str, Value]]:
    return [("error", True), ("error_code", int(code))]


class WriteCounter:
    """``mode: write``: every result numbered, counted and written (sequence last)."""

    def __init__(self) -> None:
        self.sequence = 0
        self.passed = 0
        self.rejected = 0

    def result(self, result: PlcResult, number: int | None = None) -> Step:
        """``number``: the result's own (results dropped before it leave a gap); None: the next one."""
        self.sequence = number if number is not None else self.sequence + 1
        self.passed += result.ok
        self.rejected += result.ng
        return Step(list(values_of(result, self.sequence, self.passed, self.rejected).items()), delivered=True)


class Handshake:
    """One camera's handshake. ``counts.sequence`` numbers the triggers taken (their results carry it)."""

    def __init__(self, ack_timeout_s: float, result_timeout_s: float) -> None:
        self.ack_timeout_s = ack_timeout_s
        self.result_timeout_s = result_timeout_s
        self.phase = Phase.READY
        self.counts = WriteCounter()
        self.trigger_at = 0.0
        self._deadline = 0.0

    def reset(self) -> Step:
        """(Re)connected: whatever was under way is abandoned (the caller reports it), ready for a trigger."""
        was = self.phase
        self.phase = Phase.READY
        return Step([("result_ready", False), ("trigger_ready", True)], disarm=was == Phase.INSPECTING)

    @property
    def waits_for_ack(self) -> bool:
        return self.phase == Phase.ACKING

    def triggered(self, now: float) -> Step:
        if self.phase != Phase.READY:
            return Step([("trigger", False), *error_writes(ErrorCode.TRIGGER_WHILE_BUSY)],
                        error=ErrorCode.TRIGGER_WHILE_BUSY)
        self.phase, self.trigger_at, self._deadline = Phase.INSPECTING, now, now + self.result_timeout_s
        self.counts.sequence += 1  # the trigger's number: its result carries it
        return Step([("trigger", False), ("trigger_ready", False)], arm=now)

    def finished(self, result: PlcResult, now: float) -> Step | None:
        """The triggered frame's final result; None when no trigger waits for one (it came too late)."""
        if self.phase != Phase.INSPECTING:
            return None
        counts = self.counts
        counts.passed += result.ok
        counts.rejected += result.ng
        writes = list(values_of(result, counts.sequence, counts.passed, counts.rejected).items())
        self.phase, self._deadline = Phase.ACKING, now + self.ack_timeout_s
        return Step([*writes, ("result_ready", True)], delivered=True)

    def acknowledged(self) -> Step:
        if self.phase != Phase.ACKING:
            return Step([("result_ack", False)])  # a stray acknowledgement: cleared, nothing else
        self.phase = Phase.READY
        return Step([("result_ack", False), ("result_ready", False), ("trigger_ready", True)])

    def tick(self, now: float) -> Step | None:
        """The timeouts: a step when one ran out, else None."""
        if now < self._deadline or self.phase == Phase.READY:
            return None
        if self.phase == Phase.INSPECTING:
            self.phase = Phase.READY
            return Step([*error_writes(ErrorCode.NO_RESULT), ("trigger_ready", True)], disarm=True,
                        error=ErrorCode.NO_RESULT)
        self.phase = Phase.READY
        return Step([("result_ready", False), *error_writes(ErrorCode.ACK_TIMEOUT), ("trigger_ready", True)],
                    error=ErrorCode.ACK_TIMEOUT)
