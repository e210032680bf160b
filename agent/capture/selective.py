"""Decode only what is inspected: a frame a live camera's ``fps`` limit drops is read from the stream (FFmpeg
reads and decodes its packet in ``grab``: an H.264 stream's later frames need it) but never converted to a BGR
image (``retrieve``: 1-7 ms at 1280x960 to 1920x1080, docs/openvino.md). The grabber says which frames it
wants (``OpenCVSource.wanted``), asked once each frame is in, so the fps limit's timing is unchanged. (The PyAV
source asks as an intra-only codec's packet arrives, e.g. MJPEG's, and then does not decode a frame nobody wants:
:class:`agent.capture.pyav_source.PyAVSource`.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["SKIPPED", "read_selected"]

SKIPPED = object()  # in place of the image of a frame read but not converted


def read_selected(cap: Any, wanted: Callable[[], bool] | None) -> tuple[bool, object]:
    """``cap.read()``, except that a frame ``wanted()`` refuses (asked after ``grab``) comes back as ``SKIPPED``
    without ``retrieve``."""
    if wanted is None:
        ok, image = cap.read()
        return bool(ok), image
    if not cap.grab():
        return False, None
    if not wanted():
        return True, SKIPPED
    ok, image = cap.retrieve()
    return bool(ok), image
