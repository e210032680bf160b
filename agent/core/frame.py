"""What crosses from a grabber thread to the inference thread, and the ground truth a synthetic frame carries."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np


@dataclasses.dataclass(frozen=True)
class DefectTruth:
    """One defect as drawn by a synthetic scene: its class name (the scene's own list, e.g.
    ``agent.capture.synthetic.DEFECT_CLASSES``), box in frame pixels (x1, y1, x2, y2), faintness."""

    label: str
    box: tuple[float, float, float, float]
    faint: bool
    strength: float  # drawing contrast, 0..1; faint defects are below 0.4


@dataclasses.dataclass(frozen=True)
class FrameTruth:
    """What is in one frame: part boxes and the defects visible on them; ``decoys``: marks that look like defects
    but are not (e.g. scuffs on the belt's edge, ``synthetic://conveyor?edge_marks=1``): a detection on one is a
    false positive."""

    parts: tuple[tuple[float, float, float, float], ...]
    defects: tuple[DefectTruth, ...]
    decoys: tuple[DefectTruth, ...] = ()

    @property
    def verdict(self) -> str:
        """``defect`` if any defect is visible, else ``pass``."""
        return "defect" if self.defects else "pass"


@dataclasses.dataclass(frozen=True)
class Frame:
    """One decoded camera frame.

    ``sequence`` counts frames read from the source (1, 2, ...), including the ones
    the grabber later dropped, so gaps in published sequences show drops.
    ``truth`` is only set by the synthetic source.
    """

    camera_id: str
    sequence: int
    captured_at: datetime.datetime  # UTC, wall clock at decode
    monotonic: float  # time.monotonic() at decode, for latencies
    image: np.ndarray  # BGR, HxWx3, uint8
    truth: FrameTruth | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
