"""Files and network streams decoded by PyAV (FFmpeg's libraries, the ``video`` extra) instead of OpenCV.

Why: OpenCV's ``VideoCapture`` passes no codec options and decodes with FFmpeg's frame threads. This source
decodes in the grabber's thread (``camera.decode_threads``, default 1) and converts to BGR as OpenCV does
(swscale: the same pixels, through one kept context, :class:`agent.capture.swscale.Swscale`), may skip
H.264/HEVC deblocking (``camera.skip_deblocking``) and may decode on a GPU (``camera.hwaccel``,
:mod:`agent.capture.hwdecode`); docs/openvino.md "Decoding" says what each costs.

It behaves as :class:`agent.capture.sources.OpenCVSource` does for files and streams: the same spec forms
(:mod:`agent.capture.spec`), the same error messages, corrupt frames reported in place, a file's shortfall
against its stated frame count reported as corrupt frames, ``wanted`` (a frame the fps limit drops is not
converted; with an intra-only codec such as MJPEG not even decoded), RTSP over TCP, and the open and read
timeouts. V4L2 devices and GStreamer pipelines stay with
OpenCV (:mod:`agent.capture.decoders` picks).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from agent.capture.diagnose import stream_open_failure
from agent.capture.hwdecode import HardwareDecode
from agent.capture.lowres import LowresDecoder
from agent.capture.picture_av import DecodedPicture, ModelScaling
from agent.capture.sources import SourceFrame, VideoSource
from agent.capture.spec import classify, existing_file
from agent.capture.swscale import INTERPOLATIONS, Swscale
from agent.capture.yuv_scale import PlaneScaler
from agent.core.picture import Picture
from agent.errors import SourceError

__all__ = ["MODEL_SCALINGS", "PyAVSource", "to_bgr"]

MODEL_SCALINGS = ("PLANES", "LOWRES", *INTERPOLATIONS)
"""How a picture scales itself for the model: ``PLANES`` (:class:`agent.capture.yuv_scale.PlaneScaler`), swscale
with one of its interpolations, or ``LOWRES``: MJPEG decoded small (:mod:`agent.capture.lowres`), then swscale's
``AREA`` to the window (other codecs: ``AREA`` alone)."""

logger = logging.getLogger(__name__)

_DEBLOCKED_CODECS = ("h264", "hevc")  # the codecs whose loop filter skip_loop_filter skips


def _av() -> Any:
    import av  # the video extra; decoders.py checks it is there before a PyAVSource is made

    return av


def to_bgr(frame: Any, swscale: Swscale | None = None) -> np.ndarray:
    """A decoded ``av.VideoFrame`` as a BGR ``uint8`` HxWx3 image, through FFmpeg's swscale as OpenCV's
    ``VideoCapture`` converts: the same pixels; with ``swscale``, through that persistent context (else a new
    one). (One ``cv2.cvtColor`` of the I420 planes is not cheaper here: 1.1-1.4 ms of CPU against swscale's
    0.4-0.5 at 1280x960, and half a grey level off; docs/openvino.md.)"""
    return (swscale or Swscale()).bgr(frame)


class PyAVSource(VideoSource):
    """A video file or an ``rtsp://`` / ``rtsps://`` / ``http(s)://`` stream decoded by PyAV.

    ``threads``: decoder threads (1: decode in the calling thread; 0: FFmpeg's frame threads, one per core);
    ``skip_deblocking``: FFmpeg's ``skip_loop_filter=all`` for H.264 and HEVC (cheaper, a slightly blockier
    picture); ``hwaccel``: ``none``, ``auto`` or an FFmpeg device type (``cuda``, ``vaapi``, ``qsv``, ...),
    with a fall back to the CPU (:class:`agent.capture.hwdecode.HardwareDecode`); ``model_scaling``: how the
    model's input is scaled straight from the decoded YUV picture (``PLANES``: its planes resized by OpenCV and
    converted small; or a swscale interpolation, ``AREA``, ``BILINEAR``, ...; ``LOWRES``: MJPEG decoded small by
    FFmpeg's ``lowres``, :mod:`agent.capture.lowres`), or None: resized from the full-size BGR image as for any
    source; ``decode_every_packet``: decode every packet even where the codec
    is intra-only (the behaviour before: for measuring the saving side by side, scripts/bench_mjpeg_skip.py).

    ``wanted`` (the grabber sets it for a live camera with an fps limit) is asked once each frame is in: for an
    intra-only codec (MJPEG, where no frame refers to another: FFmpeg's codec descriptor says so) as its packet
    arrives, and a frame it refuses is not decoded at all (counted in :attr:`undecoded`); for H.264, HEVC,
    MPEG-4 (later frames refer to it) once the packet is decoded, and a frame it refuses is not converted.

    With ``model_scaling``, frames are handed out as :class:`agent.capture.picture_av.DecodedPicture`: scaled for
    the model as they are decoded, converted to BGR at full size on first use; without it (the model needs the
    BGR frame anyway) and for a hardware frame, converted at once.
    """

    def __init__(
        self,
        spec: str,
        *,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        max_failed_reads: int = 50,
        threads: int = 1,
        skip_deblocking: bool = False,
        hwaccel: str = "none",
        model_scaling: str | None = None,
        decode_every_packet: bool = False,
    ) -> None:
        if threads < 0:
            raise ValueError("threads must be at least 0")
        if model_scaling is not None and model_scaling not in MODEL_SCALINGS:
            raise ValueError(f"model_scaling {model_scaling!r}: expected None or one of {', '.join(MODEL_SCALINGS)}")
        super().__init__(spec, open_timeout_s, read_timeout_s, max_failed_reads)
        self._kind, target = classify(spec)
        if self._kind not in ("file", "stream"):
            raise SourceError(f"camera source {self._desc!r}: the pyav decoder reads video files and "
                              "rtsp:// or http(s):// streams; use decoder: opencv (or auto) for V4L2 devices "
                              "and gst: pipelines")
        self._target = str(target)
        self.threads = threads
        self.skip_deblocking = skip_deblocking
        self.hardware = HardwareDecode(hwaccel, self._desc)
        self.model_scaling = model_scaling
        self.decode_every_packet = decode_every_packet
        self.undecoded = 0  # frames wanted() refused before they were decoded (intra-only codecs), in all
        self._intra_only = False  # of the stream opened: a packet nobody wants need not be decoded
        self._swscale: Swscale | None = None  # made on the first frame (PyAV is imported by then)
        self._scaling: ModelScaling | None = None  # model_scaling's, likewise
        self._lowres: LowresDecoder | None = None  # LOWRES on an MJPEG stream's first frame
        self._full_size: tuple[int, int] | None = None  # of the last frame decoded whole (lowres decodes small)
        self._container: Any = None
        self._codec: Any = None
        self._codec_name = ""  # of the last stream opened, for decoder
        self._stream: Any = None
        self._packets: Iterator[Any] | None = None
        self._frames: collections.deque[Any] = collections.deque()  # decoded, not yet handed out
        self._flushed = False

    @property
    def decoder(self) -> str:
        """Which decoder runs, for logs and ``doctor``: e.g. ``pyav h264 on the CPU, 1 thread``."""
        codec = self._codec_name or "?"
        threads = "FFmpeg's frame threads" if self.threads == 0 else f"{self.threads} thread(s)"
        deblock = ", deblocking skipped" if self.skip_deblocking and codec in _DEBLOCKED_CODECS else ""
        return f"pyav {codec} {self.hardware.describe()}, {threads}{deblock}"

    def open(self) -> None:
        self.close()
        av = _av()
        target = str(existing_file(self._target, self._desc)) if self._kind == "file" else self._target
        options = {"rtsp_transport": "tcp"} if target.lower().startswith(("rtsp://", "rtsps://")) else {}
        try:
            container = self.hardware.open(lambda hw: av.open(
                target, options=options, timeout=(self.open_timeout_s, self.read_timeout_s), hwaccel=hw))
        except (av.FFmpegError, OSError, RuntimeError) as exc:
            raise SourceError(self._open_failure_message(exc)) from exc
        if not container.streams.video:
            container.close()
            raise SourceError(f"camera source {self._desc!r}: has no video stream (expected a video such as "
                              "H.264, HEVC or MJPEG)")
        self._start(container)

    def _start(self, container: Any) -> None:
        stream = container.streams.video[0]
        codec = stream.codec_context
        if self.threads == 1:
            stream.thread_type, codec.thread_count = "NONE", 1
        else:
            stream.thread_type, codec.thread_count = "AUTO", self.threads
        if self.skip_deblocking and codec.name in _DEBLOCKED_CODECS:
            codec.options = {**codec.options, "skip_loop_filter": "all"}
        self._container, self._stream, self._codec = container, stream, codec
        self._codec_name = str(codec.name)
        self._intra_only = bool(codec.codec.intra_only) and not self.decode_every_packet
        self._packets = container.demux(stream)
        self._frames.clear()
        self._pending.clear()
        self._decoded = self._failed = 0
        self._eof = self._flushed = False
        self._full_size, self._lowres = None, None  # made again on the first frame (the stream may have changed)
        self._frame_count = int(stream.frames or 0) if self._kind == "file" else 0
        logger.debug("opened %s (%s, %s, frame count %s)", self._desc, self._kind, self.decoder,
                     self._frame_count or "unknown")

    def _open_failure_message(self, exc: BaseException) -> str:
        if self._kind == "stream":
            return stream_open_failure(self._target, self._desc, self.open_timeout_s)
        return (f"camera source {self._desc!r}: PyAV/FFmpeg cannot decode this file ({exc}; expected a video "
                "container such as .mp4, .mkv or .avi with a codec FFmpeg knows)")

    def read(self) -> SourceFrame | None:
        if self._container is None:
            raise SourceError(f"camera source {self._desc!r}: read() before open()")
        if self._pending:
            return self._pending.popleft()
        if self._eof:
            return None
        failures = 0
        while True:
            try:
                frame = self._next_frame()
            except _BrokenPacket:
                failures += 1
                if self.is_live or failures < self.max_failed_reads:
                    self._failed += 1
                    return SourceFrame.broken()  # reported in place; the next read goes on after it
                return self._end_short()
            if frame is None:
                if self.is_live:
                    raise SourceError(f"camera source {self._desc!r}: the stream ended (connection lost?)")
                return self._end_short()
            self._decoded += 1
            if frame is _UNDECODED:
                return SourceFrame(image=None, skipped=True)
            return self._wrap(frame)

    def _next_frame(self) -> Any:
        """The next decoded frame; ``None`` at the end; ``_UNDECODED`` for a frame of an intra-only codec that
        ``wanted()`` refused as its packet came in (not decoded: no later frame needs it). Raises
        :class:`_BrokenPacket` for a packet that did not decode (or a file's demuxer error), :class:`SourceError`
        for a live stream that broke."""
        av = _av()
        while not self._frames:
            if self._flushed:
                return None
            try:
                packet = next(self._packets) if self._packets is not None else None
            except StopIteration:
                packet = None
            except av.FFmpegError as exc:
                if self.is_live:
                    raise SourceError(f"camera source {self._desc!r}: no frame within {self.read_timeout_s:g} s "
                                      f"or the stream ended (connection lost? {exc})") from exc
                self._packets = self._container.demux(self._stream)  # resynchronise after the damage
                raise _BrokenPacket from exc
            if packet is not None and packet.size == 0 and self.is_live:
                continue  # nothing in it; a live stream goes on
            if packet is None or packet.size == 0:  # the end: the decoder hands out what it still holds
                self._flushed, packet = True, None
            elif self._intra_only and self._unwanted():
                self.undecoded += 1
                return _UNDECODED
            try:
                small = self._lowres.picture(packet, *self._full_size) if (
                    self._lowres is not None and packet is not None and self._full_size is not None) else None
                if small is not None:
                    return small
                self._frames.extend(self._codec.decode(packet))
            except av.FFmpegError as exc:
                logger.debug("%s: a packet did not decode: %s", self._desc, exc)
                raise _BrokenPacket from exc
        return self._frames.popleft()

    def _unwanted(self) -> bool:
        """``wanted()`` (the grabber sets it for a live camera with an fps limit) refuses the frame now in."""
        return self.wanted is not None and not self.wanted()

    def _wrap(self, frame: Any) -> SourceFrame:
        if not self._intra_only and self._unwanted():  # an intra-only codec's frame was asked before decoding
            return SourceFrame(image=None, skipped=True)
        if isinstance(frame, Picture):  # decoded small (lowres)
            return SourceFrame(picture=frame)
        if self._swscale is None:
            self._swscale = Swscale()
            self._scaling = self._make_scaling()
        self._full_size = (int(frame.width), int(frame.height))
        if (self.model_scaling == "LOWRES" and self._lowres is None and self._scaling is not None
                and self._codec_name == "mjpeg" and self.hardware.active is None):
            self._lowres = LowresDecoder(self._scaling, self._swscale)
        if self._scaling is None or self.hardware.active is not None:
            # the model needs the BGR frame anyway: converted now, while the frame is in this thread's caches
            # (a hardware frame: no device surface is held)
            return SourceFrame(image=to_bgr(frame, self._swscale))
        return SourceFrame(picture=DecodedPicture(frame, self._swscale, self._scaling))

    def _make_scaling(self) -> ModelScaling | None:
        if self.model_scaling is None:
            return None
        if self.model_scaling == "PLANES":
            return ModelScaling(PlaneScaler())
        return ModelScaling(Swscale("AREA" if self.model_scaling == "LOWRES" else self.model_scaling).bgr)

    def close(self) -> None:
        container, self._container = self._container, None
        self._packets = None
        self._codec = self._stream = None
        self._frames.clear()
        self._pending.clear()
        if container is not None:
            container.close()


_UNDECODED = object()  # _next_frame's answer for a frame wanted() refused before it was decoded


class _BrokenPacket(Exception):
    """A packet that did not decode: one corrupt frame."""
