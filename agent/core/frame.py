"""What crosses from a grabber thread to the inference thread, and the ground truth a synthetic frame carries."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np

from agent.core.picture import Picture


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


@dataclasses.dataclass(frozen=True, init=False)
class Frame:
    """One decoded camera frame.

    ``sequence`` counts frames read from the source (1, 2, ...), including the ones
    the grabber later dropped, so gaps in published sequences show drops.
    ``truth`` is only set by the synthetic source.

    ``picture`` holds its image (:class:`agent.core.picture.Picture`); ``image`` is the full-size BGR HxWx3
    ``uint8`` image, which a decoder's lazy picture makes on first use (``width``/``height`` never do).
    Made with ``image=`` (an array or a Picture) as before, or ``picture=``; ``image=`` wins where both are
    given (``dataclasses.replace(frame, image=...)``).
    """

    camera_id: str
    sequence: int
    captured_at: datetime.datetime  # UTC, wall clock at decode
    monotonic: float  # time.monotonic() at decode, for latencies
    picture: Picture
    truth: FrameTruth | None = None

    def __init__(self, camera_id: str, sequence: int, captured_at: datetime.datetime, monotonic: float,
                 image: np.ndarray | Picture | None = None, truth: FrameTruth | None = None, *,
                 picture: Picture | None = None) -> None:
        given = image if image is not None else picture
        if given is None:
            raise TypeError("Frame needs image= (a BGR array or a Picture) or picture=")
        set_ = object.__setattr__  # frozen
        set_(self, "camera_id", camera_id)
        set_(self, "sequence", sequence)
        set_(self, "captured_at", captured_at)
        set_(self, "monotonic", monotonic)
        set_(self, "picture", given if isinstance(given, Picture) else Picture(given))
        set_(self, "truth", truth)

    @property
    def image(self) -> np.ndarray:
        """BGR, HxWx3, uint8 (made now if the picture is lazy and nothing asked before)."""
        return self.picture.bgr()

    @property
    def height(self) -> int:
        return self.picture.height

    @property
    def width(self) -> int:
        return self.picture.width
