"""Hardware decoding for :class:`agent.capture.pyav_source.PyAVSource` (``camera.hwaccel``), with a fall back
to the CPU.

``none``: the CPU. A device type (``cuda`` for NVDEC on NVIDIA cards and Jetsons, ``qsv`` for Intel Quick Sync,
``vaapi``, ...): that device, or the CPU when it cannot open (no such device, no driver, no
permission, a codec the device does not decode): one warning says so (once per box: the other cameras that find
the same log it at debug level), and the source stays on the CPU from then on (a reconnect does not try the
device again). ``auto``: the device types this FFmpeg knows, in :data:`PREFERRED` order, the first that opens;
none: one info line, the CPU. Which one runs is in
:meth:`HardwareDecode.describe` (``doctor``'s camera row).

The PyPI wheels of PyAV 18 know ``cuda``, ``qsv``, ``drm`` and ``amf`` (not ``vaapi``: on an Intel box use
``qsv``, or a PyAV built against the system's FFmpeg). Only the fall back is tested here: the box that runs the
tests has no GPU.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["HWACCEL_CHOICES", "PREFERRED", "HardwareDecode", "available_devices"]

logger = logging.getLogger(__name__)

PREFERRED = ("cuda", "qsv", "vaapi", "videotoolbox", "d3d11va", "amf", "drm")
"""``auto`` tries the device types FFmpeg knows in this order."""
HWACCEL_CHOICES = ("none", "auto", *PREFERRED)
_said: set[tuple[str, str]] = set()  # (hwaccel, why unavailable) already logged in this process
_said_lock = threading.Lock()


def available_devices() -> list[str]:
    """The hardware device types the installed PyAV's FFmpeg knows (not: that such a device is here)."""
    from av.codec.hwaccel import hwdevices_available

    return [str(name) for name in hwdevices_available()]


class HardwareDecode:
    """What one source asks of the hardware, and what it got."""

    def __init__(self, hwaccel: str, desc: str) -> None:
        if hwaccel not in HWACCEL_CHOICES:
            raise ValueError(f"hwaccel must be one of {', '.join(HWACCEL_CHOICES)}, got {hwaccel!r}")
        self.requested = hwaccel
        self._desc = desc
        self.active: str | None = None  # the device type decoding now; None: the CPU
        self.unavailable: str | None = None  # why the requested device is not used (set once, then the CPU)

    def candidates(self) -> list[str]:
        """The device types to try at the next open."""
        if self.requested == "none" or self.unavailable is not None:
            return []
        known = available_devices()
        if self.requested == "auto":
            return [name for name in PREFERRED if name in known]
        return [self.requested]

    def open(self, opener: Callable[[Any], Any]) -> Any:
        """``opener(hwaccel)`` with each candidate device, then with ``None`` (the CPU). An error of the CPU
        open is raised as it is (the file or stream is the problem, not the device)."""
        from av.codec.hwaccel import HWAccel

        reasons: list[str] = []
        candidates = self.candidates()
        if not candidates and self.requested == "auto" and self.unavailable is None:
            reasons.append("this PyAV's FFmpeg knows no hardware device type")
        known = available_devices() if candidates else []
        for device in candidates:
            if device not in known:
                reasons.append(f"{device}: not in this PyAV's FFmpeg, which knows {', '.join(known) or 'none'}")
                continue
            try:
                container = opener(HWAccel(device_type=device, allow_software_fallback=False))
            except (OSError, RuntimeError, ValueError) as exc:  # av's errors are OSError/ValueError subclasses
                reasons.append(f"{device}: {exc}")
                continue
            self.active = device
            return container
        container = opener(None)
        self.active = None
        if reasons:
            self._give_up(reasons)
        return container

    def _give_up(self, reasons: list[str]) -> None:
        """The CPU opened where the device did not: say so once per box (the other cameras that find the same at
        debug level), and stop trying."""
        if self.unavailable is not None:
            return
        self.unavailable = "; ".join(reasons)
        with _said_lock:
            first = (self.requested, self.unavailable) not in _said
            _said.add((self.requested, self.unavailable))
        level = logging.DEBUG if not first else logging.INFO if self.requested == "auto" else logging.WARNING
        logger.log(level, "camera source %s: hardware decoding (hwaccel %s) is not available (%s); decoding on "
                   "the CPU%s", self._desc, self.requested, self.unavailable,
                   " (other cameras that find the same are not logged again)" if first else "")

    def describe(self) -> str:
        """``on cuda``, ``on the CPU`` or ``on the CPU (hwaccel cuda unavailable: ...)``."""
        if self.active is not None:
            return f"on {self.active}"
        if self.unavailable is not None:
            return f"on the CPU (hwaccel {self.requested} unavailable: {self.unavailable})"
        return "on the CPU"
