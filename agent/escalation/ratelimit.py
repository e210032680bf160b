"""Per-camera escalation budget: one token bucket per camera. Pure logic, time passed in.

A bucket holds at most ``burst`` tokens and gains ``per_minute / 60`` tokens a
second. An escalation takes one token; a frame that finds its camera's bucket
empty is not escalated and is published with status ``rate_limited``.
:class:`CameraRateLimiter` treats a rate of 0 as "never escalate this camera".

The caller serialises access (the escalator holds a lock around it). The number
of buckets is the number of cameras in the config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

__all__ = ["CameraRateLimiter", "TokenBucket"]


@dataclasses.dataclass
class TokenBucket:
    per_minute: float
    burst: int
    tokens: float = -1.0  # -1: full at the first look
    _last: float | None = None

    def __post_init__(self) -> None:
        if self.per_minute < 0 or self.burst < 1:
            raise ValueError(f"a token bucket needs per_minute >= 0 and burst >= 1, got {self.per_minute}, "
                             f"{self.burst}")
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self.tokens = min(float(self.burst), self.tokens + (now - self._last) * self.per_minute / 60.0)
        self._last = now if self._last is None else max(self._last, now)

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_s(self, now: float) -> float | None:
        """Seconds until a token is available (0: now; None: never, the rate is 0)."""
        self._refill(now)
        if self.tokens >= 1.0:
            return 0.0
        if self.per_minute <= 0:
            return None
        return (1.0 - self.tokens) * 60.0 / self.per_minute


class CameraRateLimiter:
    """One :class:`TokenBucket` per camera; ``limits`` maps camera id to (per_minute, burst),
    ``default`` covers cameras not named there. A camera with ``per_minute == 0`` is never escalated."""

    def __init__(self, limits: Mapping[str, tuple[float, int]], default: tuple[float, int]) -> None:
        self._limits = dict(limits)
        self._default = default
        self._buckets: dict[str, TokenBucket] = {}

    def set_limits(self, limits: Mapping[str, tuple[float, int]], default: tuple[float, int]) -> None:
        """New limits (a config reload). A camera whose limit changed keeps the tokens it has, up to its
        new burst, and earns at its new rate from now on; a camera no longer limited loses its bucket."""
        self._limits = dict(limits)
        self._default = default
        for camera, bucket in list(self._buckets.items()):
            per_minute, burst = self.limit(camera)
            if (bucket.per_minute, bucket.burst) != (per_minute, burst):
                if per_minute <= 0:
                    del self._buckets[camera]
                    continue
                bucket.per_minute, bucket.burst = per_minute, burst
                bucket.tokens = min(bucket.tokens, float(burst))

    def limit(self, camera: str) -> tuple[float, int]:
        return self._limits.get(camera, self._default)

    def allow(self, camera: str, now: float) -> bool:
        per_minute, burst = self.limit(camera)
        if per_minute <= 0:
            return False
        bucket = self._buckets.get(camera)
        if bucket is None:
            bucket = self._buckets[camera] = TokenBucket(per_minute, burst)
        return bucket.take(now)

    def refusal(self, camera: str, now: float) -> str:
        """Why ``camera`` was refused, for the event's ``escalation.reason``."""
        per_minute, burst = self.limit(camera)
        if per_minute <= 0:
            return f"escalation is off for camera {camera} (per_minute: 0)"
        bucket = self._buckets.get(camera)
        wait = bucket.wait_s(now) if bucket is not None else 0.0
        return (f"camera {camera} spent its escalation budget ({per_minute:g}/min, burst {burst}); "
                f"next in {wait or 0.0:.1f} s")
