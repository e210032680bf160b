"""Builders shared by the image tests: inspections of synthetic frames, a disk whose free space a test sets."""

from __future__ import annotations

import datetime
import errno
import os
import pathlib

import numpy as np

from agent.core.detections import PrefilterResult
from agent.core.frame import Frame
from agent.core.inspection import Inspection
from agent.outputs.images.store import Disk
from tests.conftest import make_event


def inspection(camera: str = "cam1", verdict: str = "defect", sequence: int = 1,
               at: datetime.datetime | None = None, size: tuple[int, int] = (96, 64), seed: int = 0) -> Inspection:
    """A frame of noise (so its JPEG has a size that does not depend on luck) and an event of ``verdict``."""
    rng = np.random.default_rng(seed + sequence)
    image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    at = at or datetime.datetime.now(datetime.timezone.utc)
    event = make_event(camera=camera, sequence=sequence, verdict=verdict)
    event = type(event)(**{**event.__dict__, "captured_at": at, "frame_width": size[0], "frame_height": size[1]})
    frame = Frame(camera, sequence, at, 0.0, image)
    return Inspection(frame, PrefilterResult("m", (), 1.0, "detect"), event.decision, event)


class FullDisk(Disk):
    """A disk that refuses writes with ENOSPC while ``full``, and reports ``free`` bytes (None: the real ones)."""

    def __init__(self) -> None:
        self.full = False
        self.free: int | None = None

    def write(self, path: pathlib.Path, data: bytes) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        super().write(path, data)

    def free_bytes(self, path: pathlib.Path) -> int:
        return super().free_bytes(path) if self.free is None else self.free
