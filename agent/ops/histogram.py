"""Thread-safe latency histograms with fixed buckets (Prometheus style). Pure bookkeeping.

    h = Histogram(LATENCY_BUCKETS_S)
    h.observe(0.031)                 # seconds
    snap = h.snapshot()              # cumulative counts per upper bound, sum, count

:class:`LabelledHistograms` keeps one histogram per label value (``stage="prefilter"``).
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections.abc import Sequence

__all__ = ["LATENCY_BUCKETS_S", "VLM_BUCKETS_S", "Histogram", "HistogramSnapshot", "LabelledHistograms"]

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Buckets for the agent's stages: a prefilter frame takes 5-50 ms, an outbox commit about 1 ms,
an escalation (gRPC + VLM) from 0.1 s to seconds."""

VLM_BUCKETS_S: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
"""Buckets for the gateway: a LLaVA answer takes seconds, queueing may add more."""


@dataclasses.dataclass(frozen=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]  # upper bounds, ascending (+Inf is implied)
    cumulative: tuple[int, ...]  # observations <= each bound
    sum: float
    count: int


class Histogram:
    def __init__(self, bounds: Sequence[float]) -> None:
        ordered = tuple(float(b) for b in bounds)
        if not ordered or list(ordered) != sorted(set(ordered)):
            raise ValueError(f"histogram bounds must be distinct and ascending, got {list(bounds)}")
        self._bounds = ordered
        self._counts = [0] * (len(ordered) + 1)  # the last is the +Inf bucket
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self._bounds, value)  # value == bound belongs to that bucket (le)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative: list[int] = []
        running = 0
        for c in counts[:-1]:
            running += c
            cumulative.append(running)
        return HistogramSnapshot(self._bounds, tuple(cumulative), total, running + counts[-1])


class LabelledHistograms:
    """One :class:`Histogram` per label value, created on first use."""

    def __init__(self, bounds: Sequence[float], preset: Sequence[str] = ()) -> None:
        self._bounds = tuple(bounds)
        self._lock = threading.Lock()
        self._by_label: dict[str, Histogram] = {label: Histogram(self._bounds) for label in preset}

    def observe(self, label: str, value: float) -> None:
        with self._lock:
            hist = self._by_label.get(label)
            if hist is None:
                hist = self._by_label[label] = Histogram(self._bounds)
        hist.observe(value)

    def snapshots(self) -> dict[str, HistogramSnapshot]:
        with self._lock:
            items = list(self._by_label.items())
        return {label: h.snapshot() for label, h in items}
