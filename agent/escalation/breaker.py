"""The escalation client's circuit breaker. Pure logic: no I/O, no threads, time passed in.

Three states:

* ``closed``: calls go through. Each failure counts; a success resets the count.
  ``failure_threshold`` failures in a row open the breaker.
* ``open``: no call goes through (the frame is published at once with status
  ``unavailable``) until ``open_s`` seconds have passed since it opened.
* ``half_open``: exactly one call, the *probe*, goes through; every other call
  is refused while it runs. The probe's success closes the breaker; its failure
  opens it again for another ``open_s``.

What counts as a failure is the caller's decision (see
:func:`agent.escalation.client.classify`): the gateway unreachable, a deadline
passed, the VLM down or busy. A refused request (``INVALID_ARGUMENT``) or an
answer that did not match the schema is no sign of an unhealthy gateway.

Results of calls started before the breaker opened (stragglers) are ignored
while it is open or half-open: only the probe decides.

The caller serialises access (the escalator holds a lock around it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker", "Permit"]

BreakerState = Literal["closed", "open", "half_open"]
Permit = Literal["call", "probe"]
"""What :meth:`CircuitBreaker.acquire` grants: an ordinary call (breaker closed) or the one probe."""


@dataclasses.dataclass
class CircuitBreaker:
    failure_threshold: int
    open_s: float
    on_change: Callable[[BreakerState, BreakerState, str], None] | None = None
    """Called with (old state, new state, reason) on every transition, e.g. to log it."""

    _state: BreakerState = "closed"
    _failures: int = 0  # consecutive failures while closed
    _opened_at: float = 0.0
    _probe_out: bool = False
    opens: int = 0
    """How many times the breaker opened (from closed or after a failed probe)."""
    last_failure: str | None = None

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {self.failure_threshold}")
        if self.open_s <= 0:
            raise ValueError(f"open_s must be positive, got {self.open_s}")

    def state(self, now: float) -> BreakerState:
        """The state at ``now``: an open breaker whose interval has passed reads as half-open."""
        if self._state == "open" and now - self._opened_at >= self.open_s:
            self._move("half_open", f"{self.open_s:g} s passed since it opened; the next call is a probe")
        return self._state

    def would_allow(self, now: float) -> bool:
        """Whether :meth:`acquire` would grant a call now (takes nothing)."""
        state = self.state(now)
        return state == "closed" or (state == "half_open" and not self._probe_out)

    def retry_in(self, now: float) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        return max(0.0, self._opened_at + self.open_s - now) if self.state(now) == "open" else 0.0

    def acquire(self, now: float) -> Permit | None:
        """A permit for one call, or None when the breaker refuses it. Every permit must be settled
        with :meth:`record` or, when the call never ran, :meth:`release`."""
        state = self.state(now)
        if state == "closed":
            return "call"
        if state == "half_open" and not self._probe_out:
            self._probe_out = True
            return "probe"
        return None

    def record(self, permit: Permit, ok: bool, now: float, reason: str | None = None) -> None:
        """Settle a permit with the call's result (``ok`` False: a failure, with its ``reason``)."""
        if not ok:
            self.last_failure = reason
        if permit == "probe":
            self._probe_out = False
            if ok:
                self._failures = 0
                self._move("closed", "the probe call succeeded")
            else:
                self._open(now, f"the probe call failed: {reason}")
            return
        if self._state != "closed":
            return  # a straggler from before the breaker opened: only the probe decides
        if ok:
            self._failures = 0
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open(now, f"{self._failures} calls in a row failed, the last: {reason}")

    def release(self, permit: Permit) -> None:
        """Give a permit back unused (the call was never made: shutdown, or the request could not be built)."""
        if permit == "probe":
            self._probe_out = False

    def _open(self, now: float, reason: str) -> None:
        self._opened_at = now
        self._failures = 0
        self.opens += 1
        self._move("open", reason)

    def _move(self, new: BreakerState, reason: str) -> None:
        old, self._state = self._state, new
        if old != new and self.on_change is not None:
            self.on_change(old, new, reason)
