"""MJPEG decoded small for the model (``camera.decoder_scaling: lowres``), the full frame only when needed.

FFmpeg's MJPEG decoder can decode a JPEG at 1/2, 1/4 or 1/8 of its size through a smaller IDCT (its ``lowres``
option 1, 2, 3): for a 1280x960 frame whose model input is 320x240, ``lowres`` 2 gives that 320x240 picture for
about half the CPU of the full decode (docs/openvino.md "Decoding"). :class:`LowresDecoder` decodes each packet of
one camera at the largest reduction that still covers the window the model's letterbox last asked for
(:func:`lowres_level`), and keeps the packet: the picture's full-size BGR image (escalation, snapshots, audit
images, recording) is decoded from it again at full size on first use (:class:`LowresPicture`: once, for every
thread, as :class:`agent.capture.picture_av.DecodedPicture` converts). Until the model has asked for a size, and
where no reduction covers its window, the camera decodes at full size as without it.

The model's input changes a little (a reduced IDCT is not a resize of the full picture): measured in
docs/openvino.md; opt-in.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from agent.capture.picture_av import KeptPicture, ModelScaling
from agent.capture.swscale import Swscale

__all__ = ["LowresDecoder", "LowresPicture", "lowres_level"]

LEVELS = (3, 2, 1)  # FFmpeg's mjpeg lowres: each side divided by 2 ** level (rounded up)


def lowres_level(width: int, height: int, window_w: int, window_h: int) -> int:
    """The largest ``lowres`` whose picture of a ``width`` x ``height`` frame is still at least ``window_w`` x
    ``window_h`` (0: none is)."""
    for level in LEVELS:
        if -(-width >> level) >= window_w and -(-height >> level) >= window_h:  # FFmpeg's AV_CEIL_RSHIFT
            return level
    return 0


def _context(options: dict[str, str]) -> Any:
    import av  # the video extra

    context = av.CodecContext.create("mjpeg", "r")
    context.thread_count = 1  # the caller's thread, as the camera decodes
    context.options = options
    return context


class LowresDecoder:
    """One MJPEG camera's decoding for ``decoder_scaling: lowres``: :meth:`picture` in the camera's thread,
    :meth:`full_bgr` from any thread (one full-size decoder under a lock, converted through ``full``, the
    camera's kept swscale context)."""

    def __init__(self, scaling: ModelScaling, full: Swscale) -> None:
        self.scaling = scaling
        self._full = full
        self._small: tuple[int, Any] | None = None  # (level, its decoder)
        self._whole: Any = None  # the full-size decoder, made on first use
        self._lock = threading.Lock()

    def picture(self, packet: Any, width: int, height: int) -> LowresPicture | None:
        """``packet`` (of a ``width`` x ``height`` frame) decoded small, or None where it is not to be (the
        model has not asked for a size yet, no reduction covers it, or the frame turned out another size: the
        caller decodes it at full size). Raises ``av.FFmpegError`` for a packet that does not decode."""
        size = self.scaling.size
        if size is None:
            return None
        level = lowres_level(width, height, *size)
        if level == 0:
            return None
        if self._small is None or self._small[0] != level:
            self._small = (level, _context({"lowres": str(level)}))
        frames = self._small[1].decode(packet)
        if len(frames) != 1 or frames[0].width != -(-width >> level) or frames[0].height != -(-height >> level):
            return None  # not one frame of the size the last full frame had: the stream changed
        return LowresPicture(packet, frames[0], width, height, self)

    def full_bgr(self, packet: Any) -> np.ndarray:
        """``packet`` decoded at full size and converted to BGR (once per picture: :class:`LowresPicture`)."""
        with self._lock:
            if self._whole is None:
                self._whole = _context({})
            frames = self._whole.decode(packet)
        if not frames:
            raise RuntimeError("the MJPEG packet decoded small but gave no full-size frame")
        return self._full.bgr(frames[0])


class LowresPicture(KeptPicture):
    """A frame decoded small for the model (``scaled_bgr``, scaled in the camera's thread as it is decoded) that
    decodes its kept packet at full size on the first :meth:`bgr` call."""

    __slots__ = ("_decoder", "_packet")

    def __init__(self, packet: Any, small: Any, width: int, height: int, decoder: LowresDecoder) -> None:
        super().__init__(small, width, height, decoder.scaling)
        self._packet, self._decoder = packet, decoder

    def _convert(self) -> np.ndarray:
        return self._decoder.full_bgr(self._packet)
