"""What a camera's source spec names: a file, a network stream, a V4L2 device or a GStreamer pipeline.

Shared by the decoders (:class:`agent.capture.sources.OpenCVSource`,
:class:`agent.capture.pyav_source.PyAVSource`), so that both read a spec alike and refuse a bad one with
the same message. No I/O but the checks of :func:`existing_file`.
"""

from __future__ import annotations

import pathlib
import re
import urllib.parse

from agent.errors import SourceError
from agent.redact import redact

__all__ = ["ACCEPTED_FORMS", "SCHEME", "STREAM_SCHEMES", "classify", "existing_file", "unknown_scheme"]

ACCEPTED_FORMS = (
    "synthetic://conveyor or synthetic://surface[?seed=N&fps=F&frames=N&width=W&height=H&edge_marks=1]",
    "rtsp://[user:pass@]HOST[:PORT]/PATH (also rtsps://)",
    "http(s)://HOST/PATH (MJPEG or any stream FFmpeg reads)",
    "/dev/videoN or a device index N (V4L2)",
    "gst:PIPELINE ... ! appsink (needs OpenCV built with GStreamer)",
    "a video file path (or file:///path)",
)

SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")


def unknown_scheme(spec: str) -> str:
    """The message for a spec whose URL scheme no source reads."""
    m = SCHEME.match(spec)
    scheme = m.group(1) if m else "?"
    return (f"camera source {redact(spec)!r}: unknown URL scheme {scheme + '://'!r}; accepted forms: "
            + "; ".join(ACCEPTED_FORMS))


def classify(spec: str) -> tuple[str, str | int]:
    """``(kind, target)``: ``("file", path)``, ``("stream", url)``, ``("v4l2", index or /dev/videoN)`` or
    ``("gstreamer", pipeline as written)``. Raises :class:`SourceError` for a spec that names none of them."""
    desc = redact(spec)
    m = SCHEME.match(spec)
    if spec.startswith("gst:"):
        pipeline = spec[len("gst:"):].strip()
        if not pipeline:
            raise SourceError(f"camera source {desc!r}: empty GStreamer pipeline after 'gst:'")
        return "gstreamer", pipeline
    if m:
        scheme = m.group(1).lower()
        if scheme in STREAM_SCHEMES:
            return "stream", spec
        if scheme == "file":
            path = urllib.parse.unquote(urllib.parse.urlsplit(spec).path)
            if not path:
                raise SourceError(f"camera source {desc!r}: file:// URL without a path")
            return "file", path
        raise SourceError(unknown_scheme(spec))
    if spec.isdigit():
        return "v4l2", int(spec)
    if spec.startswith("/dev/video"):
        return "v4l2", spec
    if not spec.strip():
        raise SourceError("camera source is empty; expected one of: " + "; ".join(ACCEPTED_FORMS))
    return "file", spec


def existing_file(target: str, desc: str) -> pathlib.Path:
    """The video file ``target`` names, or :class:`SourceError` saying it is missing or not a file."""
    path = pathlib.Path(target).expanduser()
    if not path.exists():
        raise SourceError(
            f"camera source {desc!r}: file not found (expected an existing video file, "
            "an rtsp:// or http(s):// URL, /dev/videoN or synthetic://conveyor)"
        )
    if not path.is_file():
        raise SourceError(f"camera source {desc!r}: is not a regular file "
                          "(expected a video file such as .mp4, .mkv or .avi)")
    return path
