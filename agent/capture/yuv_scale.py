"""A decoded 4:2:0 frame scaled to a small BGR image by resizing its Y, U and V planes, then converting it small.

:class:`PlaneScaler` resizes the luma plane to the output size and both chroma planes to half of it with
OpenCV's ``INTER_LINEAR`` (the resize the agent's letterbox applies to a BGR frame), then converts that small
4:2:0 picture to BGR through swscale (a kept context, the frame's own colour space and range: the converter a
full-size frame goes through). Resizing commutes with the (affine) colour conversion, so this is the BGR frame
resized, up to rounding and the chroma's upsampling: 0.05-0.17 grey levels from it on average
(``python scripts/bench_swscale.py``), for half the CPU and without a full-size BGR image. Other pixel formats
(4:2:2, NV12, grey, 10 bit) and odd output sizes are declined (None: the caller converts the whole frame).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from agent.capture.swscale import Swscale

__all__ = ["PlaneScaler"]

_FORMATS = ("yuv420p", "yuvj420p")


def _plane(frame: Any, index: int, width: int, height: int) -> np.ndarray:
    plane = frame.planes[index]
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:height, :width]


class PlaneScaler:
    """Scales decoded ``av.VideoFrame`` s of one camera (``scaler(frame, width, height)``); safe to call from
    several threads (the small conversion's swscale context holds a lock)."""

    def __init__(self) -> None:
        self._convert = Swscale()

    def __call__(self, frame: Any, width: int, height: int) -> np.ndarray | None:
        """``frame`` as a ``height`` x ``width`` BGR ``uint8`` image, or None when it is not 8-bit planar 4:2:0
        or the size is odd."""
        import av

        name = frame.format.name
        if name not in _FORMATS or width % 2 or height % 2 or width < 2 or height < 2:
            return None
        w, h = frame.width, frame.height
        small = np.empty((height * 3 // 2, width), np.uint8)  # I420: Y, then U and V at half size
        cv2.resize(_plane(frame, 0, w, h), (width, height), dst=small[:height], interpolation=cv2.INTER_LINEAR)
        chroma = small[height:].reshape(2, height // 2, width // 2)
        cw, ch = (w + 1) // 2, (h + 1) // 2
        for i in (0, 1):
            cv2.resize(_plane(frame, 1 + i, cw, ch), (width // 2, height // 2), dst=chroma[i],
                       interpolation=cv2.INTER_LINEAR)
        picture = av.VideoFrame.from_ndarray(small, format=name)
        picture.colorspace, picture.color_range = frame.colorspace, frame.color_range
        return self._convert.bgr(picture)
