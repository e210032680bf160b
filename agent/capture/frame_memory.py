"""Frame memory: a decoded frame's buffer is reused by the C allocator instead of mapped anew for every frame.

Every frame a source decodes is a new numpy array (1280x960 BGR: 3.7 MB). glibc's malloc serves a block that
large with a fresh ``mmap`` and returns it with ``munmap`` when the frame is freed, unless its dynamic threshold
has moved above that size: so every frame's pages were faulted in and zeroed by the kernel again. It shows
on a saturated box (frames dropped, freed in bursts): at 8 cameras of 1280x960 H.264, 88-520 minor page
faults per inspected frame in the grabber threads, 6-7 with the thresholds below, the grabbers' CPU per
inspected frame 0.72-0.87x; on a quiet box 2-4 faults without them (``python scripts/bench_threads.py
--baseline DIR``, 2026-12-05).

:func:`keep_frame_memory` raises glibc's mmap threshold to ``MMAP_THRESHOLD`` (frames up to 4K BGR come from
the heap, whose freed blocks the next frame reuses) and its trim threshold to ``TRIM_THRESHOLD`` (free heap
memory up to that is kept, not handed back to the kernel at every free). The memory held is what the frames
in flight take at their peak; it is not returned to the system while the agent runs.

Only on glibc (``mallopt``); elsewhere (musl, macOS) nothing changes. The grabbers call it as they start.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import threading

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_frame_memory"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks up to this size come from the heap: a 3840x2160 BGR frame (24.9 MB) fits; glibc's upper limit."""
TRIM_THRESHOLD = 128 * 1024 * 1024
"""Free memory at the top of a heap is returned to the kernel only beyond this."""

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3

_lock = threading.Lock()
_applied: bool | None = None  # None: not tried yet


def keep_frame_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process (later calls return the first one's answer).
    True when they were set; False where the C library is not glibc or refuses. Never raises."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _set_thresholds()
        return _applied


def _set_thresholds() -> bool:
    if platform.libc_ver()[0] != "glibc":
        log.debug("frame memory: the C library is not glibc; malloc thresholds left as they are")
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError) as exc:
        log.debug("frame memory: mallopt is not available (%s)", exc)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    if done:
        log.debug("frame memory: malloc serves blocks up to %d bytes from its heap and keeps up to %d free bytes",
                  MMAP_THRESHOLD, TRIM_THRESHOLD)
    else:
        log.debug("frame memory: glibc refused the malloc thresholds; left as they were")
    return done
