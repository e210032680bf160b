"""A PyAV-decoded frame's picture, converted to BGR only when something needs it (:class:`DecodedPicture`).

The picture keeps the decoder's ``av.VideoFrame`` (YUV, reference-counted: 1280x960 yuv420p is 1.8 MB against
BGR's 3.7 MB) and makes the full-size BGR image on the first :meth:`~DecodedPicture.bgr` call, once, through
the camera's kept swscale context (:class:`agent.capture.swscale.Swscale`); later calls, from any thread, get
the same array. :meth:`~DecodedPicture.scaled_bgr` gives the picture at the size the model's letterbox asks
for, scaled straight from the YUV frame (the camera's ``decoder_scaling``, :class:`ModelScaling`) without the
full-size BGR image. The size asked for is remembered, and every later frame is scaled to it as it is decoded,
in the camera's own thread while the frame is still in its caches (scaling it later on the model's thread, from
memory, cost more: docs/openvino.md "Decoding"). The frame is released with the picture.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.capture.swscale import Swscale
from agent.core.picture import Picture

__all__ = ["DecodedPicture", "KeptPicture", "ModelScaling"]

Scaler = Callable[[Any, int, int], np.ndarray | None]  # (frame, width, height) -> BGR, or None: declined


class ModelScaling:
    """One camera's way of scaling its decoded frames for the model (``scale``), and the size the model last
    asked for (``size``; None until it asks), so that the next frames are scaled to it as they are decoded."""

    def __init__(self, scale: Scaler) -> None:
        self.scale = scale
        self.size: tuple[int, int] | None = None  # (width, height); set from the model's thread, read here


class KeptPicture(Picture, metaclass=abc.ABCMeta):
    """What a decoder's kept pictures share (:class:`DecodedPicture`, and MJPEG's
    :class:`agent.capture.lowres.LowresPicture`): a size known without converting; the full-size BGR image made
    on the first :meth:`bgr` call (:meth:`_convert`), once for every thread; and the model's input scaled from
    ``source`` by the camera's ``scaling`` (made at once where the model has asked for a size before)."""

    __slots__ = ("_height", "_lock", "_scaled", "_scaling", "_source", "_width")

    def __init__(self, source: Any, width: int, height: int, scaling: ModelScaling | None) -> None:
        super().__init__(None)
        self._source = source
        self._scaling = scaling
        self._width = width
        self._height = height
        self._lock = threading.Lock()
        size = scaling.size if scaling is not None else None
        self._scaled = (size, scaling.scale(source, *size)) if scaling is not None and size is not None else None

    @property
    def width(self) -> int:
        return self._width

    @property
    def height(self) -> int:
        return self._height

    @abc.abstractmethod
    def _convert(self) -> np.ndarray:
        """The full-size BGR image, made from what this picture keeps (called once, under the lock)."""

    def bgr(self) -> np.ndarray:
        image = self._image
        if image is None:
            with self._lock:  # two threads asking at once convert once
                if self._image is None:
                    self._image = self._convert()
                image = self._image
        return image

    def scaled_bgr(self, width: int, height: int) -> np.ndarray | None:
        scaling = self._scaling
        if scaling is None:
            return None
        made = self._scaled
        if made is not None and made[0] == (width, height):
            return made[1]
        scaling.size = (width, height)  # the next frames are scaled to this as they are decoded
        return scaling.scale(self._source, width, height)


class DecodedPicture(KeptPicture):
    """A decoded ``av.VideoFrame`` (not a hardware frame: those are converted at once, so that no device
    surface is held), converted through ``full`` (a swscale context) to the BGR image at its own size, and
    through ``scaling`` to the model's input size (None, or a None from it: :meth:`scaled_bgr` declines, the
    caller resizes :meth:`bgr` as for any frame). Made in the decoding thread: where the model has asked for a
    size before, the frame is scaled to it here and now."""

    __slots__ = ("_full",)

    def __init__(self, frame: Any, full: Swscale, scaling: ModelScaling | None) -> None:
        super().__init__(frame, int(frame.width), int(frame.height), scaling)
        self._full = full

    def _convert(self) -> np.ndarray:
        return self._full.bgr(self._source)
