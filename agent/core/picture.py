"""A frame's picture: the full-size BGR image, made when something first asks for it.

:class:`Picture` holds a ready BGR ``uint8`` HxWx3 image (OpenCV, the synthetic scenes, image files, tests).
A decoder may hand out a subclass that keeps the decoded picture instead (PyAV's YUV frame, about half the
bytes of BGR: :class:`agent.capture.picture_av.DecodedPicture`) and converts it only on the first call of
:meth:`Picture.bgr` (escalation, snapshots, audit images, recording, learn-mode sampling, zones), once, for
every thread; and may scale it for the model straight from the decoder's picture in one pass
(:meth:`Picture.scaled_bgr`), so that a frame only the model sees is never converted at full size.
``width``/``height`` never convert.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Picture"]


class Picture:
    """A ready BGR ``uint8`` HxWx3 image (see the module's docstring for the lazy kind)."""

    __slots__ = ("__weakref__", "_image")

    def __init__(self, image: np.ndarray | None) -> None:
        self._image = image

    @property
    def width(self) -> int:
        return int(self.bgr().shape[1])

    @property
    def height(self) -> int:
        return int(self.bgr().shape[0])

    @property
    def converted(self) -> bool:
        """Whether the full-size BGR image exists now (a ready picture's always does)."""
        return self._image is not None

    def bgr(self) -> np.ndarray:
        """The full-size BGR image (made on the first call for a lazy picture; the same array after)."""
        if self._image is None:
            raise RuntimeError("a Picture without an image must override bgr()")
        return self._image

    def scaled_bgr(self, width: int, height: int) -> np.ndarray | None:
        """The picture scaled to ``width`` x ``height`` BGR in one pass from what the decoder gave, or None
        where this picture cannot (a ready image: the caller resizes :meth:`bgr` as before)."""
        return None

    def __repr__(self) -> str:
        image = self._image
        made = "not converted" if image is None else f"{image.shape[1]}x{image.shape[0]} BGR"
        return f"{type(self).__name__}({made})"
