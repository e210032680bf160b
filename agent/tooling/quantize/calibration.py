"""Calibration frames for INT8 quantization: a folder of camera frames, or the synthetic scene.

Calibration must look like what the camera sends: 8-bit frames of one size (the
camera's), colour or grey. A grey (single-channel) image, as a mono camera sends it,
becomes BGR the way capture converts a grey frame (:func:`agent.capture.sources.as_bgr`:
the grey value in all three channels), which is also how the model sees that camera.
Every image is checked before calibration starts, so a bad file fails in a second
with its name, not after minutes of calibration.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator

import cv2
import numpy as np

from agent.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MIN_SIDE = 32
MAX_SIDE = 8192
SYNTHETIC = "synthetic"


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    """Where the frames come from, and how to read them (again) one by one."""

    description: str  # for the model card and the gate record
    count: int
    frame_size: tuple[int, int]  # (width, height)
    _files: tuple[pathlib.Path, ...] = ()
    _synthetic_seed: int | None = None

    def frames(self) -> Iterator[np.ndarray]:
        """BGR uint8 frames, as a camera source delivers them (grey files: the grey value in all three channels,
        as :func:`agent.capture.sources.as_bgr` converts a mono camera's frame; OpenCV's ``IMREAD_COLOR``
        decodes a grey file to exactly that)."""
        if self._synthetic_seed is not None:
            from agent.capture.synthetic import render_still

            rng = np.random.default_rng(self._synthetic_seed)
            for _ in range(self.count):
                yield render_still(rng)[0]
            return
        for path in self._files:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:  # checked before; the file changed since
                raise DatasetError(f"calibration image {path} can no longer be read")
            yield image


def _describe_channels(image: np.ndarray) -> str:
    channels = 1 if image.ndim == 2 else image.shape[2]
    return {2: "2 channels (greyscale + alpha)", 4: "4 channels (colour + alpha)"}.get(channels, f"{channels} channels")


def check_calibration_image(path: pathlib.Path, expected_size: tuple[int, int] | None) -> tuple[int, int]:
    """Read and check one image; returns its (width, height)."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.stat().st_size else np.zeros(0, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DatasetError(f"calibration image {path}: cannot be decoded ({path.stat().st_size} bytes); "
                           "expected a JPEG, PNG or BMP camera frame")
    if image.dtype != np.uint8:
        raise DatasetError(f"calibration image {path}: {image.dtype} pixels; expected 8-bit colour or grey frames")
    if image.ndim == 3 and image.shape[2] not in (1, 3):
        raise DatasetError(f"calibration image {path}: {_describe_channels(image)}; expected 3-channel colour "
                           "or 1-channel grey frames such as a camera sends")
    h, w = image.shape[:2]
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_SIDE:
        raise DatasetError(f"calibration image {path}: {w}x{h} pixels; expected camera frames between "
                           f"{MIN_SIDE} and {MAX_SIDE} pixels a side")
    if expected_size is not None and (w, h) != expected_size:
        raise DatasetError(f"calibration image {path}: {w}x{h} pixels, but the first image is "
                           f"{expected_size[0]}x{expected_size[1]}; calibration frames must all come from the "
                           "camera(s) the model will see, at one frame size")
    return w, h


def from_folder(folder: pathlib.Path, limit: int) -> CalibrationSet:
    """Up to ``limit`` images from ``folder`` (sorted; spread evenly over the folder when it has more)."""
    if limit < 1:
        raise DatasetError(f"calibration count {limit}: expected at least 1 frame (300 or more is recommended)")
    if not folder.exists():
        raise DatasetError(f"calibration folder {folder} does not exist; expected a folder of camera frames "
                           f"(JPEG/PNG) or '{SYNTHETIC}'")
    if not folder.is_dir():
        raise DatasetError(f"calibration path {folder} is not a folder; expected a folder of camera frames "
                           f"(JPEG/PNG) or '{SYNTHETIC}'")
    try:
        entries = sorted(folder.rglob("*"))
    except OSError as exc:
        raise DatasetError(f"calibration folder {folder} cannot be read: {exc}") from exc
    files = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        others = [p.name for p in entries if p.is_file()][:5]
        raise DatasetError(f"calibration folder {folder} has no images"
                           + (f" (found {', '.join(others)}...)" if others else " (it is empty)")
                           + f"; expected {', '.join(IMAGE_SUFFIXES)} camera frames")
    if len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    size: tuple[int, int] | None = None
    for path in files:
        try:
            size = check_calibration_image(path, size)
        except OSError as exc:
            raise DatasetError(f"calibration image {path} cannot be read: {exc}") from exc
    assert size is not None
    return CalibrationSet(description=f"{len(files)} frames from {folder}", count=len(files), frame_size=size,
                          _files=tuple(files))


def synthetic(count: int, seed: int) -> CalibrationSet:
    """``count`` frames of the synthetic conveyor scene (not the frames of the held-out split)."""
    from agent.capture.synthetic import DEFAULT_SETTINGS

    if count < 1:
        raise DatasetError(f"calibration count {count}: expected at least 1 frame (300 or more is recommended)")
    return CalibrationSet(description=f"{count} synthetic conveyor frames, seed {seed}", count=count,
                          frame_size=(DEFAULT_SETTINGS.width, DEFAULT_SETTINGS.height), _synthetic_seed=seed)
