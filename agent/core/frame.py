"""What crosses from a grabber thread to the inference thread."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np

from agent.capture.synthetic import FrameTruth


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
