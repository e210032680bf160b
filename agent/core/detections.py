"""Prefilter results: plain frozen values, no numpy views into runtime buffers."""

from __future__ import annotations

import dataclasses
from typing import Literal

Task = Literal["detect", "classify", "anomaly"]


@dataclasses.dataclass(frozen=True)
class Detection:
    """One thing the prefilter found. A detector gives a box in original-frame pixels
    (x1, y1, x2, y2); a classifier labels the whole frame and gives ``box=None``."""

    label: str
    class_id: int
    confidence: float
    box: tuple[float, float, float, float] | None


@dataclasses.dataclass(frozen=True)
class PrefilterResult:
    """Everything the prefilter says about one frame.

    A detector fills ``detections``; ``probabilities`` stays empty. A classifier
    fills ``probabilities``: (class name, probability) for every class, in class-id
    order (index = class id), summing to 1; ``detections`` stays empty, and
    ``ranked`` gives the classes best first. An anomaly model fills ``anomaly``:
    the frame's anomaly confidence in 0..1 (0.5 at the model's threshold), and
    ``detections`` with the regions over the threshold (label ``anomaly``, boxes).
    """

    model_id: str
    detections: tuple[Detection, ...]
    latency_ms: float  # pre-process + inference + post-process for this frame
    task: Task = "detect"
    probabilities: tuple[tuple[str, float], ...] = ()
    anomaly: float | None = None  # anomaly models only

    @property
    def ranked(self) -> tuple[tuple[str, float], ...]:
        """``probabilities`` best first; of two equal ones the lower class id comes first."""
        order = sorted(range(len(self.probabilities)), key=lambda i: -self.probabilities[i][1])
        return tuple(self.probabilities[i] for i in order)
