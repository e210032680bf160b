"""Handing freed memory back to the system: glibc's ``malloc_trim``.

A model session that is closed, or the ONNX graph and its serialized copy that loading a session goes
through (tens of MB for the shipped FP32 detector), are freed into glibc's heaps, not returned to the
kernel: another thread's heap (glibc keeps one arena per thread that allocates) does not reuse them, and
the grabbers raise the trim threshold so that freed frames stay on the heap (agent.capture.frame_memory).
So the process's resident memory only grows with every session opened. :func:`release_free_memory` asks
glibc to return the free pages of every arena; the model's code calls it after a session is opened or closed
(rare events, a few milliseconds each). Elsewhere than glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import threading
from typing import Any

__all__ = ["release_free_memory"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_trim: list[Any] = []  # [malloc_trim] once looked up, [None] where there is none


def release_free_memory() -> bool:
    """Return the free pages of every malloc arena to the kernel; True when glibc did (it found some)."""
    with _lock:
        if not _trim:
            _trim.append(_lookup())
        trim = _trim[0]
    if trim is None:
        return False
    return bool(trim(0))


def _lookup() -> Any:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError) as exc:
        log.debug("malloc_trim is not available (%s)", exc)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim
