"""Counters of the gateway's calls, for the periodic summary log line and ``/metrics``. Pure bookkeeping,
no I/O."""

from __future__ import annotations

import collections
import dataclasses
import threading

from agent.ops.histogram import VLM_BUCKETS_S, LabelledHistograms

__all__ = ["CallStats", "Summary", "percentile"]


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` (0..1) percentile of ascending ``sorted_values`` by the nearest-rank method; 0.0 if empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 1))))
    return sorted_values[rank - 1]


@dataclasses.dataclass(frozen=True)
class Summary:
    calls: int
    by_code: dict[str, int]
    p50_ms: float
    p99_ms: float
    vlm_p50_ms: float
    total_calls: int


class CallStats:
    """Calls per status code and their latencies since the last :meth:`take_summary` (thread-safe)."""

    _MAX_SAMPLES = 10_000  # per interval; beyond it the oldest latencies are dropped (counts stay exact)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._codes: collections.Counter[str] = collections.Counter()
        self._gateway_ms: collections.deque[float] = collections.deque(maxlen=self._MAX_SAMPLES)
        self._vlm_ms: collections.deque[float] = collections.deque(maxlen=self._MAX_SAMPLES)
        self.total_calls = 0
        # never reset, for /metrics: calls by status code, and latency histograms (gateway, ollama)
        self.totals: collections.Counter[str] = collections.Counter()
        self.client_totals: collections.Counter[tuple[str, str]] = collections.Counter()  # (client, code)
        self.latency = LabelledHistograms(VLM_BUCKETS_S, preset=("gateway", "ollama"))

    def record(self, code: str, gateway_ms: float, vlm_ms: float | None, client: str = "anonymous") -> None:
        with self._lock:
            self.client_totals[(client, code)] += 1
            self._codes[code] += 1
            self.total_calls += 1
            self._gateway_ms.append(gateway_ms)
            if vlm_ms is not None:
                self._vlm_ms.append(vlm_ms)
            self.totals[code] += 1
        self.latency.observe("gateway", gateway_ms / 1000.0)
        if vlm_ms is not None:
            self.latency.observe("ollama", vlm_ms / 1000.0)

    def refused(self, client: str, code: str) -> None:
        """A call refused before its request was read (authentication, admission): counted, no latency."""
        with self._lock:
            self.client_totals[(client, code)] += 1
            self._codes[code] += 1
            self.total_calls += 1
            self.totals[code] += 1

    def totals_by_client(self) -> dict[tuple[str, str], int]:
        """Calls by (client, gRPC status code) since the gateway started."""
        with self._lock:
            return dict(self.client_totals)

    def totals_by_code(self) -> dict[str, int]:
        """Calls by gRPC status code since the gateway started."""
        with self._lock:
            return dict(self.totals)

    def take_summary(self) -> Summary:
        """The interval's numbers; starts a new interval."""
        with self._lock:
            codes, gateway, vlm = dict(self._codes), sorted(self._gateway_ms), sorted(self._vlm_ms)
            self._codes.clear()
            self._gateway_ms.clear()
            self._vlm_ms.clear()
            total = self.total_calls
        return Summary(calls=sum(codes.values()), by_code=codes, p50_ms=percentile(gateway, 0.5),
                       p99_ms=percentile(gateway, 0.99), vlm_p50_ms=percentile(vlm, 0.5), total_calls=total)
