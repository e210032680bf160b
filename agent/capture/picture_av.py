"""A PyAV-decoded frame's picture, converted to BGR only when something needs it (:class:`DecodedPicture`).

The picture keeps the decoder's ``av.VideoFrame`` (YUV, reference-counted: 1280x960 yuv420p is 1.8 MB against
BGR's 3.7 MB) and makes the full-size BGR image on the first :meth:`~DecodedPicture.bgr` call, once, through
the camera's kept swscale context (:class:`agent.capture.swscale.Swscale`); later calls, from any thread, get
the same array. :meth:`~DecodedPicture.scaled_bgr` scales straight from the YUV frame to the size the model's
letterbox asks for, in one pass (the camera's ``decoder_scaling``), without the full-size BGR
image: a frame only the model sees is never converted at full size. The frame is released with the picture.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.capture.swscale import Swscale
from agent.core.picture import Picture

__all__ = ["DecodedPicture"]


class DecodedPicture(Picture):
    """A decoded ``av.VideoFrame`` (not a hardware frame: those are converted at once, so that no device
    surface is held), converted through ``full`` (a swscale context) to the BGR image at its own size, and
    through ``scaled(frame, width, height)`` to the model's input size (None, or a None from it:
    :meth:`scaled_bgr` declines, the caller resizes :meth:`bgr` as for any frame)."""

    __slots__ = ("_frame", "_full", "_height", "_lock", "_scaled", "_width")

    def __init__(self, frame: Any, full: Swscale, scaled: Callable[[Any, int, int], np.ndarray | None] | None) -> None:
        super().__init__(None)
        self._frame = frame
        self._full = full
        self._scaled = scaled
        self._width = int(frame.width)
        self._height = int(frame.height)
        self._lock = threading.Lock()

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    def bgr(self) -> np.ndarray:
        image = self._image
        if image is None:
            with self._lock:  # two threads asking at once convert once
                if self._image is None:
                    self._image = self._full.bgr(self._frame)
                image = self._image
        return image

    def scaled_bgr(self, width: int, height: int) -> np.ndarray | None:
        if self._scaled is None:
            return None
        return self._scaled(self._frame, width, height)
