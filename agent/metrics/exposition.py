"""The Prometheus text exposition format (version 0.0.4), written from plain values. Pure logic.

    fam = Family("edge_agent_frames_read_total", "counter", "Frames read from the camera")
    fam.add(1234, camera="cam1")
    text = render([fam])

A histogram family takes :class:`~agent.metrics.histogram.HistogramSnapshot` values
(:meth:`Family.add_histogram`) and writes the ``_bucket``/``_sum``/``_count`` series.
Label values are escaped (backslash, double quote, newline); so is help text.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from typing import Literal

from agent.metrics.histogram import HistogramSnapshot

__all__ = ["CONTENT_TYPE", "Family", "MetricType", "format_value", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
    return "{" + inner + "}" if inner else ""


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


def render(families: Iterable[Family]) -> str:
    """The exposition text: ``# HELP``/``# TYPE`` then the samples of each family, newline-terminated."""
    lines: list[str] = []
    for fam in families:
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        lines += [f"{name}{_labels(labels)} {format_value(value)}" for name, labels, value in fam.samples]
    return "\n".join(lines) + "\n"
