"""Frame sources: where a camera's frames come from.

Every source sits behind the small :class:`FrameSource` protocol, so the grabber
(and the tests) never know which kind they hold:

* :class:`OpenCVSource`: video files, ``rtsp://`` / ``rtsps://`` / ``http(s)://``
  streams (FFmpeg), V4L2 devices (``/dev/videoN`` or an index) and GStreamer
  pipelines (``gst:...``, only with an OpenCV built with GStreamer).
* :class:`SyntheticSource`: ``synthetic://conveyor?seed=1&fps=15`` renders the
  synthetic conveyor scene (``synthetic://surface``: the grey surface scene), with
  ground truth on every frame.

Every source hands out BGR frames: a grey (single-channel) frame, as a mono camera
sends it, is converted by :func:`as_bgr` (the grey value in all three channels).

:func:`open_source` picks the implementation from the spec. Constructors do no
I/O (a bad spec fails at once, before any camera is opened); :meth:`open` does.

Sources never sleep: pacing and dropping are the grabber's job.
"""

from __future__ import annotations

import collections
import logging
import math
import pathlib
import urllib.parse
from collections.abc import Callable
from typing import Protocol, TypeGuard

import cv2
import numpy as np

from agent.capture.diagnose import quiet_video_libraries, stream_open_failure
from agent.capture.scenes import SCENES, SceneStream
from agent.capture.selective import SKIPPED, read_selected
from agent.capture.source_frame import SourceFrame
from agent.capture.spec import ACCEPTED_FORMS, SCHEME, STREAM_SCHEMES, classify, existing_file, unknown_scheme
from agent.errors import SourceError
from agent.redact import redact

__all__ = [
    "ACCEPTED_FORMS",
    "FrameSource",
    "OpenCVSource",
    "SourceFrame",
    "SyntheticSource",
    "as_bgr",
    "open_source",
]

logger = logging.getLogger(__name__)


class FrameSource(Protocol):
    """Where frames come from. One thread uses a source at a time.

    A source may also have a ``nominal_fps: float | None`` attribute: the rate a
    non-live source should be played at when the camera config sets no ``fps``
    (``None``: as fast as the consumer takes frames). The grabber reads it with
    ``getattr``, so sources without it are fine.
    """

    @property
    def is_live(self) -> bool:
        """True for cameras and network streams (frames keep coming, a failure is
        retried); false for files and synthetic sources (finite or replayable)."""
        ...

    def open(self) -> None:
        """Open (or re-open) the source. Raises :class:`SourceError` saying which
        source and what was expected."""
        ...

    def read(self) -> SourceFrame | None:
        """The next frame; ``None`` at the end of a finite source. Raises
        :class:`SourceError` when a live stream broke (the caller reconnects)."""
        ...

    def close(self) -> None:
        """Release the source. Safe to call twice or before :meth:`open`."""
        ...

    def describe(self) -> str:
        """A human-readable name for logs and errors, without passwords."""
        ...


def _valid_image(image: object) -> TypeGuard[np.ndarray]:
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3)))
        and image.shape[0] > 0
        and image.shape[1] > 0
    )


def as_bgr(image: np.ndarray) -> np.ndarray:
    """A frame as the agent handles it: BGR ``uint8`` HxWx3. A grey frame (HxW or HxWx1, as a mono
    camera or a single-channel image file gives it) gets its grey value in all three channels,
    as OpenCV's ``IMREAD_COLOR`` decodes a grey file; a BGR frame is returned as it is."""
    if image.ndim == 2 or image.shape[2] == 1:
        out: np.ndarray = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
        return out
    return image


class VideoSource:
    """What the two decoders of video files and streams share (:class:`OpenCVSource`,
    :class:`agent.capture.pyav_source.PyAVSource`): the settings checked once, the counters a file's
    shortfall is judged by, and the properties the grabber and ``doctor`` read. ``_kind``/``_target`` are
    set by the subclass after ``__init__``."""

    def __init__(self, spec: str, open_timeout_s: float, read_timeout_s: float, max_failed_reads: int) -> None:
        if open_timeout_s <= 0 or read_timeout_s <= 0:
            raise ValueError("open_timeout_s and read_timeout_s must be positive")
        if max_failed_reads < 1:
            raise ValueError("max_failed_reads must be at least 1")
        self.spec = spec
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_failed_reads = max_failed_reads
        self.nominal_fps: float | None = None  # files play as fast as they are consumed
        # live: asked once a frame is in; False: not converted (PyAV, an intra-only codec: not even decoded)
        self.wanted: Callable[[], bool] | None = None
        self._desc = redact(spec)
        self._kind = ""
        self._frame_count = 0  # known frame count of a file, 0 = unknown
        self._decoded = 0  # frames decoded since open
        self._failed = 0  # failed reads reported as corrupt frames since open
        self._eof = False
        self._pending: collections.deque[SourceFrame] = collections.deque()

    @property
    def kind(self) -> str:
        """``file``, ``stream`` (and for OpenCV ``v4l2``, ``gstreamer``)."""
        return self._kind

    @property
    def is_live(self) -> bool:
        return self._kind != "file"

    @property
    def frame_count(self) -> int:
        """The file's frame count as the container states it; 0 when unknown or live."""
        return self._frame_count

    def describe(self) -> str:
        return self._desc

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._desc!r}, kind={self._kind})"

    def _end_short(self) -> SourceFrame | None:
        """The file ended before its stated frame count. FFmpeg skips broken packets
        silently, so frames can go missing without a failed read: report the
        shortfall as corrupt frames, unless it is small enough to be the container's
        estimate being off (1 % of the count, at least 2 frames)."""
        self._eof = True
        missing = self._frame_count - self._decoded - self._failed
        if missing > max(2, self._frame_count // 100):
            logger.warning("%s: the file ended after %d of its %d frames; counting the %d missing as corrupt",
                           self._desc, self._decoded + self._failed, self._frame_count, missing)
            self._failed += missing
            self._pending.extend(SourceFrame.broken() for _ in range(missing))
            return self._pending.popleft()
        logger.debug("%s: ended after %d of %d frames (count was an estimate)",
                     self._desc, self._decoded + self._failed, self._frame_count)
        return None


class OpenCVSource(VideoSource):
    """Files, network streams, V4L2 devices and GStreamer pipelines through ``cv2.VideoCapture``.

    Files: a read that fails before the container's frame count is reached is a
    corrupt frame (reported, then reading goes on); after ``max_failed_reads``
    failures in a row the file is treated as ended, and frames still missing from
    the stated count are reported as corrupt (FFmpeg may skip broken packets
    without a failed read), so good + corrupt frames add up to the frame count.
    A shortfall of at most 1 % (2 frames minimum) is taken for an estimated count.
    Live sources: a failed read raises :class:`SourceError`; a decoded frame of the
    wrong shape or type is reported as corrupt.
    """

    def __init__(
        self,
        spec: str,
        *,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        max_failed_reads: int = 50,
    ) -> None:
        super().__init__(spec, open_timeout_s, read_timeout_s, max_failed_reads)
        self._cap: cv2.VideoCapture | None = None
        self._kind, self._target = self._classify(spec)

    def _classify(self, spec: str) -> tuple[str, str | int]:
        kind, target = classify(spec)
        if kind != "gstreamer":
            return kind, target
        pipeline = str(target)
        if not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
            raise SourceError(
                f"camera source {self._desc!r}: this OpenCV ({cv2.__version__}) was built without "
                "GStreamer support (the opencv-python wheels from PyPI are); use an OpenCV built "
                "with -DWITH_GSTREAMER=ON, or give the stream as an rtsp:// URL or a file instead"
            )
        if "appsink" not in pipeline:
            pipeline += " ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=2"
        return "gstreamer", pipeline

    @property
    def decoder(self) -> str:
        """Which decoder runs, for ``doctor`` (camera.decoder)."""
        return f"opencv {cv2.__version__} ({self._kind}; FFmpeg's frame threads for files and streams)"

    def open(self) -> None:
        self.close()
        quiet_video_libraries()  # OpenCV's and FFmpeg's own lines, once per retry, say less than our message
        try:
            cap = self._open_capture()
        except cv2.error as exc:
            raise SourceError(f"camera source {self._desc!r}: OpenCV refused to open it: {exc}") from exc
        if not cap.isOpened():
            cap.release()
            raise SourceError(self._open_failure_message())
        self._cap = cap
        self._decoded = 0
        self._failed = 0
        self._eof = False
        self._pending.clear()
        self._frame_count = 0
        if self._kind == "file":
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            self._frame_count = int(count) if math.isfinite(count) and count > 0 else 0
        logger.debug("opened %s (%s, backend %s, frame count %s)", self._desc, self._kind,
                     cap.getBackendName(), self._frame_count or "unknown")

    def _open_capture(self) -> cv2.VideoCapture:
        if self._kind == "file":
            path = existing_file(str(self._target), self._desc)
            return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if self._kind == "stream":
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000),
            ]
            return cv2.VideoCapture(str(self._target), cv2.CAP_FFMPEG, params)
        if self._kind == "v4l2":
            if isinstance(self._target, str) and not pathlib.Path(self._target).exists():
                raise SourceError(f"camera source {self._desc!r}: no such device (is the camera "
                                  "plugged in? `v4l2-ctl --list-devices` lists the devices)")
            return cv2.VideoCapture(self._target, cv2.CAP_V4L2)
        return cv2.VideoCapture(str(self._target), cv2.CAP_GSTREAMER)

    def _open_failure_message(self) -> str:
        if self._kind == "file":
            return (f"camera source {self._desc!r}: OpenCV/FFmpeg cannot decode this file "
                    "(expected a video container such as .mp4, .mkv or .avi with a codec FFmpeg knows)")
        if self._kind == "stream":
            return stream_open_failure(str(self._target), self._desc, self.open_timeout_s)
        if self._kind == "v4l2":
            return (f"camera source {self._desc!r}: could not open the V4L2 device (is it in use by "
                    "another process, and may this user read it, e.g. group 'video'?)")
        return (f"camera source {self._desc!r}: GStreamer could not start the pipeline "
                "(check it with gst-launch-1.0; it must end in appsink)")

    def read(self) -> SourceFrame | None:
        if self._cap is None:
            raise SourceError(f"camera source {self._desc!r}: read() before open()")
        if self._pending:
            return self._pending.popleft()
        if self._eof:
            return None
        ok, image = self._read_once()
        if ok:
            return self._wrap(image)
        if self.is_live:
            raise SourceError(
                f"camera source {self._desc!r}: no frame within {self.read_timeout_s:g} s or the "
                "stream ended (connection lost?)"
            )
        if self._frame_count <= 0 or self._decoded >= self._frame_count:
            self._eof = True  # the end of the file
            return None
        # A failure before the known end: skip the broken part and resynchronise.
        failures = 1
        while failures < self.max_failed_reads:
            ok, image = self._read_once()
            if ok:
                self._failed += failures
                self._pending.extend(SourceFrame.broken() for _ in range(failures - 1))
                self._pending.append(self._wrap(image))
                return SourceFrame.broken()
            failures += 1
        return self._end_short()

    def _read_once(self) -> tuple[bool, object]:
        cap = self._cap
        if cap is None:  # closed meanwhile
            return False, None
        try:
            ok, image = read_selected(cap, self.wanted if self.is_live else None)
        except cv2.error as exc:
            logger.debug("%s: read raised %s", self._desc, exc)
            return False, None
        ok = bool(ok) and image is not None
        if ok:
            self._decoded += 1
        return ok, image

    @staticmethod
    def _wrap(image: object) -> SourceFrame:
        if image is SKIPPED:
            return SourceFrame(image=None, skipped=True)
        if not _valid_image(image):
            return SourceFrame.broken()
        return SourceFrame(image=np.ascontiguousarray(as_bgr(image)))

    def close(self) -> None:
        cap, self._cap = self._cap, None
        self._pending.clear()
        if cap is not None:
            cap.release()


class SyntheticSource:
    """``synthetic://conveyor?seed=1&fps=15&frames=300``: a synthetic scene (see
    :mod:`agent.capture.scenes`: ``conveyor``, ``surface``) with ground truth on every frame.

    Query keys (all optional): ``seed`` (int >= 0, default 0), ``fps`` (the rate the
    grabber plays it at, default 15; 0 = as fast as frames are taken), ``frames``
    (how many frames before the end, default unlimited), ``width``/``height``
    (pixels, default the scene's: 640x480 conveyor, 640x640 surface; at least 320x240), ``edge_marks``
    (the conveyor: 1 draws defect-like marks that are not defects on the belt's edges, default 0).
    Re-opening restarts the same deterministic stream. The surface scene's grey frames
    are handed out as BGR (:func:`as_bgr`), as a mono camera's are.
    """

    SCENES = tuple(SCENES)
    ACCEPTED_KEYS = ("seed", "fps", "frames", "width", "height", "edge_marks")

    def __init__(self, spec: str) -> None:
        self.spec = spec
        parsed = urllib.parse.urlsplit(spec)
        if parsed.scheme != "synthetic":
            raise SourceError(f"camera source {spec!r}: not a synthetic:// source")
        scene = (parsed.netloc + parsed.path).strip("/")
        if scene not in self.SCENES:
            raise SourceError(f"camera source {spec!r}: unknown synthetic scene {scene!r}; "
                              f"accepted: {', '.join(self.SCENES)}")
        try:
            pairs = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True, strict_parsing=True) \
                if parsed.query else []
        except ValueError as exc:
            raise SourceError(f"camera source {spec!r}: malformed query {parsed.query!r} "
                              "(expected key=value pairs joined by '&')") from exc
        values: dict[str, str] = {}
        for key, value in pairs:
            if key not in self.ACCEPTED_KEYS:
                raise SourceError(f"camera source {spec!r}: unknown query key {key!r}; accepted keys: "
                                  f"{', '.join(self.ACCEPTED_KEYS)}")
            if key in values:
                raise SourceError(f"camera source {spec!r}: query key {key!r} given twice")
            values[key] = value
        seed = self._int(values, "seed", 0, 2**63 - 1)
        width = self._int(values, "width", 320, 4096)
        height = self._int(values, "height", 240, 4096)
        self.seed: int = 0 if seed is None else seed
        self.fps = self._float(values, "fps", 15.0, 0.0, 240.0)
        self.frames: int | None = self._int(values, "frames", 1, 2**63 - 1)
        self.edge_marks = bool(self._int(values, "edge_marks", 0, 1))
        if self.edge_marks and scene != "conveyor":
            raise SourceError(f"camera source {spec!r}: edge_marks is an option of synthetic://conveyor only")
        self.scene = SCENES[scene]
        self.width = self.scene.size[0] if width is None else width
        self.height = self.scene.size[1] if height is None else height
        self.nominal_fps: float | None = self.fps or None
        self._scene: SceneStream | None = None
        self._emitted = 0

    def _int(self, values: dict[str, str], key: str, lo: int, hi: int) -> int | None:
        raw = values.get(key)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise SourceError(f"camera source {self.spec!r}: query key {key!r} must be an integer, "
                              f"got {raw!r}") from None
        if not lo <= value <= hi:
            raise SourceError(f"camera source {self.spec!r}: query key {key!r} must be between {lo} and "
                              f"{hi}, got {value}")
        return value

    def _float(self, values: dict[str, str], key: str, default: float, lo: float, hi: float) -> float:
        raw = values.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SourceError(f"camera source {self.spec!r}: query key {key!r} must be a number, "
                              f"got {raw!r}") from None
        if not (math.isfinite(value) and lo <= value <= hi):
            raise SourceError(f"camera source {self.spec!r}: query key {key!r} must be between {lo:g} and "
                              f"{hi:g} (0 = unpaced), got {raw!r}")
        return value

    @property
    def is_live(self) -> bool:
        return False

    def describe(self) -> str:
        return self.spec

    def __repr__(self) -> str:
        return f"SyntheticSource({self.spec!r})"

    def open(self) -> None:
        self._scene = self.scene.stream(self.seed, self.width, self.height, edge_marks=self.edge_marks)
        self._emitted = 0

    def read(self) -> SourceFrame | None:
        if self._scene is None:
            raise SourceError(f"camera source {self.spec!r}: read() before open()")
        if self.frames is not None and self._emitted >= self.frames:
            return None
        image, truth = self._scene.next_frame()
        self._emitted += 1
        return SourceFrame(image=as_bgr(image), truth=truth)

    def close(self) -> None:
        self._scene = None


def open_source(spec: str) -> FrameSource:
    """The source for ``spec`` (constructed, not yet opened). Raises
    :class:`SourceError` for a spec no source understands."""
    text = spec.strip()
    if not text:
        raise SourceError("camera source is empty; expected one of: " + "; ".join(ACCEPTED_FORMS))
    m = SCHEME.match(text)
    if m and m.group(1).lower() == "synthetic":
        return SyntheticSource(text)
    if m and m.group(1).lower() not in (*STREAM_SCHEMES, "file"):
        raise SourceError(unknown_scheme(text))
    return OpenCVSource(text)
