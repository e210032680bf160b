"""The Prometheus text exposition format (version 0.0.4) of plain values, written by prometheus_client.

    fam = Family("edge_agent_frames_read_total", "counter", "Frames read from the camera")
    fam.add(1234, camera="cam1")
    text = render([fam])

A histogram family takes :class:`~agent.ops.histogram.HistogramSnapshot` values
(:meth:`Family.add_histogram`) and writes the ``_bucket``/``_sum``/``_count`` series; the ``le``
values are written as before (``le="1"``, not ``"1.0"``), so queries naming a bucket keep working.
:func:`render` adds prometheus_client's standard ``process_*`` and ``python_*`` metrics (resident
memory, CPU seconds, open file descriptors, start time, garbage collector, Python version).

The families are built at scrape time from the counters the program keeps anyway, then handed to
prometheus_client as one collector for that scrape: no global registry, so several services in one
process (as in the tests) stay separate.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Iterator
from typing import Literal

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from agent.ops.histogram import HistogramSnapshot

__all__ = ["CONTENT_TYPE", "Family", "MetricType", "format_value", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""What :func:`render` writes: the classic text format (prometheus_client's own output for valid names)."""

MetricType = Literal["counter", "gauge", "histogram"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: integers without a point, +Inf, -Inf, NaN."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@dataclasses.dataclass
class Family:
    """One metric family: name, type, help, and its samples (labels -> value)."""

    name: str
    type: MetricType
    help: str
    samples: list[tuple[str, tuple[tuple[str, str], ...], float]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"metric name {self.name!r} is not a valid Prometheus name")
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r} must end in _total")

    def add(self, value: float, **labels: str) -> Family:
        """One sample of a counter or gauge."""
        if self.type == "histogram":
            raise TypeError(f"{self.name} is a histogram; use add_histogram")
        self.samples.append((self.name, _checked(labels), float(value)))
        return self

    def add_histogram(self, snap: HistogramSnapshot, **labels: str) -> Family:
        """The cumulative buckets, sum and count of one labelled histogram."""
        if self.type != "histogram":
            raise TypeError(f"{self.name} is a {self.type}, not a histogram")
        base = _checked(labels)
        for bound, count in zip(snap.bounds, snap.cumulative, strict=True):
            self.samples.append((f"{self.name}_bucket", (*base, ("le", format_value(bound))), float(count)))
        self.samples.append((f"{self.name}_bucket", (*base, ("le", "+Inf")), float(snap.count)))
        self.samples.append((f"{self.name}_sum", base, snap.sum))
        self.samples.append((f"{self.name}_count", base, float(snap.count)))
        return self


def _checked(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    for key in labels:
        if not _LABEL.match(key) or key.startswith("__") or key == "le":
            raise ValueError(f"label name {key!r} is not allowed")
    return tuple((k, str(v)) for k, v in labels.items())


_STANDARD = CollectorRegistry(auto_describe=False)
"""The process and Python metrics (the ones prometheus_client's default registry has), in a registry of our own."""
ProcessCollector(registry=_STANDARD)
PlatformCollector(registry=_STANDARD)
GCCollector(registry=_STANDARD)


class _Scrape(Collector):
    """One scrape's families as a prometheus_client collector, the standard process metrics after them."""

    def __init__(self, families: Iterable[Family], standard: bool) -> None:
        self._families = list(families)
        self._standard = standard

    def collect(self) -> Iterator[Metric]:
        for fam in self._families:
            # prometheus_client names a counter family without its _total and adds it back when writing
            metric = Metric(fam.name.removesuffix("_total") if fam.type == "counter" else fam.name, fam.help,
                            fam.type)
            for name, labels, value in fam.samples:
                metric.add_sample(name, dict(labels), value)
            yield metric
        if self._standard:
            yield from _STANDARD.collect()


def render(families: Iterable[Family], standard: bool = True) -> str:
    """The exposition text: ``# HELP``/``# TYPE`` then the samples of each family, then (``standard``)
    the process and Python metrics of this process."""
    return generate_latest(_Scrape(families, standard)).decode("utf-8")
