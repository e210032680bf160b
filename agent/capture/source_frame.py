"""What one read from a source gives: a picture, or a corrupt or skipped frame (:class:`SourceFrame`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from agent.core.frame import FrameTruth
from agent.core.picture import Picture

__all__ = ["SourceFrame"]


@dataclasses.dataclass(frozen=True, init=False)
class SourceFrame:
    """One read from a source: a picture (``image``: its BGR ``uint8`` HxWx3 image, made on first use where
    the picture is lazy: :mod:`agent.core.picture`), or no picture with ``corrupt=True`` when the source
    produced something that could not be decoded, or ``skipped=True`` when it was read but not converted."""

    picture: Picture | None
    truth: FrameTruth | None = None
    corrupt: bool = False
    skipped: bool = False  # read but not converted: the grabber's fps limit drops it (OpenCVSource.wanted)

    def __init__(self, image: np.ndarray | Picture | None = None, truth: FrameTruth | None = None,
                 corrupt: bool = False, skipped: bool = False, *, picture: Picture | None = None) -> None:
        given = image if image is not None else picture
        if given is None and not (corrupt or skipped):
            raise ValueError("SourceFrame without an image must be marked corrupt=True")
        set_ = object.__setattr__  # frozen
        set_(self, "picture", given if given is None or isinstance(given, Picture) else Picture(given))
        set_(self, "truth", truth)
        set_(self, "corrupt", corrupt)
        set_(self, "skipped", skipped)

    @property
    def image(self) -> np.ndarray | None:
        """The BGR image (None for a corrupt or skipped frame)."""
        return None if self.picture is None else self.picture.bgr()

    @classmethod
    def broken(cls) -> SourceFrame:
        """A frame that was read but could not be decoded."""
        return cls(image=None, corrupt=True)
