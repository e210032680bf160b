"""Which decoder reads a camera: ``camera.decoder`` (``auto``, ``pyav``, ``opencv``) and its options.

``auto`` (the default): video files and ``rtsp://`` / ``http(s)://`` streams through PyAV
(:class:`agent.capture.pyav_source.PyAVSource`) where the ``video`` extra is installed, else OpenCV; V4L2
devices, GStreamer pipelines and ``synthetic://`` scenes always through their own source
(:func:`agent.capture.sources.open_source`). ``pyav`` without PyAV installed, or for a V4L2 device, is a
clear :class:`SourceError` when the camera is made (before anything is opened).
"""

from __future__ import annotations

import importlib.util

from agent.capture.sources import FrameSource, open_source
from agent.capture.spec import SCHEME, classify
from agent.config.models import CameraConfig
from agent.errors import SourceError
from agent.redact import redact

__all__ = ["camera_source", "pyav_installed", "uses_pyav"]


def pyav_installed() -> bool:
    """True when PyAV (the ``video`` extra) can be imported."""
    return importlib.util.find_spec("av") is not None


def uses_pyav(camera: CameraConfig) -> bool:
    """Whether :func:`camera_source` gives this camera a PyAV source (SourceError: a spec nobody reads, or
    ``decoder: pyav`` where it cannot be)."""
    spec = camera.source.strip()
    m = SCHEME.match(spec)
    if m and m.group(1).lower() == "synthetic":
        if camera.decoder == "pyav":
            raise SourceError(f"camera {camera.id}: decoder: pyav decodes video files and streams, not "
                              f"{redact(spec)!r}; leave decoder at auto")
        return False
    if camera.decoder == "opencv":
        return False
    kind, _target = classify(spec)
    if camera.decoder == "auto":
        return kind in ("file", "stream") and pyav_installed()
    if not pyav_installed():
        raise SourceError(f"camera {camera.id}: decoder: pyav needs PyAV, which is not installed: "
                          "pip install 'edge-agent[video]' (Python 3.11 or later), or set decoder: auto or opencv")
    return True


def camera_source(camera: CameraConfig) -> FrameSource:
    """The source for ``camera`` (constructed, not opened), with the decoder its config asks for."""
    if not uses_pyav(camera):
        return open_source(camera.source)
    from agent.capture.pyav_source import PyAVSource

    scaling = None if camera.decoder_scaling == "none" else camera.decoder_scaling.upper()
    return PyAVSource(camera.source.strip(), threads=camera.decode_threads,
                      skip_deblocking=camera.skip_deblocking, hwaccel=camera.hwaccel, model_scaling=scaling)
