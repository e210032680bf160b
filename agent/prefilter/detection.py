"""Prefilter results: plain frozen values, no numpy views into runtime buffers."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Detection:
    """One detected object, box in original-frame pixels (x1, y1, x2, y2)."""

    label: str
    class_id: int
    confidence: float
    box: tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class PrefilterResult:
    """Everything the prefilter says about one frame."""

    model_id: str
    detections: tuple[Detection, ...]
    latency_ms: float  # pre-process + inference + post-process for this frame
