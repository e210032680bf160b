"""Generic synthetic anomalies for training on good frames only (DRAEM-style, numpy + OpenCV, no torch).

A mask is fractal value noise (random grids at a few scales, upsampled and summed, as Perlin noise is used in
DRAEM) thresholded inside a random window, so that its blobs range from a few pixels to a large part of the crop.
What fills it is one of four generic sources, none drawn with the synthetic scenes' defect code:

    paste    a patch of another good frame (flipped or rotated), blended with opacity 0.5..1 (DRAEM)
    noise    a value-noise texture of random mean, contrast and tint
    shift    the frame itself made darker or brighter inside the mask (smooth edge)
    scar     a thin random stroke of a random colour (CutPaste's "scar")

:func:`make_anomalous` returns the changed crop and its soft mask in 0..1 (the training target).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

FILLS = ("paste", "noise", "shift", "scar")


def value_noise(rng: np.random.Generator, h: int, w: int, octaves: int = 3) -> np.ndarray:
    """Fractal value noise in about -1..1, (h, w) float32: random grids of 2..2^octaves+1 cells, upsampled."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    base = int(rng.integers(2, 5))
    for o in range(octaves):
        cells = base * (2 ** o)
        grid = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    return out / total


def random_mask(rng: np.random.Generator, h: int, w: int, min_size: int = 4) -> np.ndarray:
    """One anomaly's soft mask (h, w) float32 in 0..1: thresholded noise in a random window of min_size..h/2."""
    mask = np.zeros((h, w), np.float32)
    hi = max(min_size + 1, min(h, w) // 2)
    size = int(np.exp(rng.uniform(np.log(min_size), np.log(hi))))  # log-uniform: small ones as often as big ones
    sh = max(2, int(size * rng.uniform(0.5, 1.5)))
    sw = max(2, size)
    sh, sw = min(sh, h), min(sw, w)
    y0, x0 = int(rng.integers(0, h - sh + 1)), int(rng.integers(0, w - sw + 1))
    noise = value_noise(rng, sh, sw)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    falloff = 1.0 - (((yy + 0.5) / sh * 2 - 1) ** 2 + ((xx + 0.5) / sw * 2 - 1) ** 2)  # 1 centre, <=0 corners
    blob = (noise * 0.6 + falloff) > rng.uniform(0.2, 0.6)
    mask[y0:y0 + sh, x0:x0 + sw] = blob
    if mask.sum() < 2:
        mask[y0 + sh // 2, x0 + sw // 2] = 1.0
    soft: np.ndarray = cv2.GaussianBlur(mask, (3, 3), 0.7)
    return np.clip(soft * 1.5, 0.0, 1.0)


def _fill_paste(rng: np.random.Generator, crop: np.ndarray, donor: np.ndarray) -> np.ndarray:
    h, w = crop.shape[:2]
    dh, dw = donor.shape[:2]
    y, x = int(rng.integers(0, dh - h + 1)), int(rng.integers(0, dw - w + 1))
    patch = donor[y:y + h, x:x + w].astype(np.float32)
    patch = np.rot90(patch, int(rng.integers(0, 4))) if h == w else patch[::-1] if rng.random() < 0.5 else patch
    patch = patch * rng.uniform(0.6, 1.4) + rng.uniform(-40, 40)
    return np.ascontiguousarray(patch)


def _fill_noise(rng: np.random.Generator, crop: np.ndarray, donor: np.ndarray) -> np.ndarray:
    h, w = crop.shape[:2]
    tex = value_noise(rng, h, w, octaves=int(rng.integers(2, 6)))
    mean, contrast = rng.uniform(0, 255), rng.uniform(10, 90)
    tint = rng.uniform(0.7, 1.3, 3).astype(np.float32)
    return (mean + contrast * tex)[:, :, None] * tint[None, None, :]


def _fill_shift(rng: np.random.Generator, crop: np.ndarray, donor: np.ndarray) -> np.ndarray:
    delta = rng.uniform(25, 90) * (1 if rng.random() < 0.5 else -1)
    return crop.astype(np.float32) * rng.uniform(0.7, 1.3) + delta


def make_scar(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A thin random stroke's mask (CutPaste's scar): 2-5 joined segments, 1-3 px wide."""
    mask = np.zeros((h, w), np.float32)
    pts = [np.array([rng.uniform(0, w), rng.uniform(0, h)])]
    length = rng.uniform(6, max(8.0, min(h, w) * 0.6))
    angle = rng.uniform(0, np.pi)
    for _ in range(int(rng.integers(2, 6))):
        angle += rng.normal(0, 0.4)
        step = length / 3
        pts.append(pts[-1] + step * np.array([np.cos(angle), np.sin(angle)]))
    line = np.round(np.array(pts)).astype(np.int32)
    cv2.polylines(mask, [line], False, 1.0, int(rng.integers(1, 4)), cv2.LINE_AA)
    return np.clip(mask, 0.0, 1.0)


_FILLERS: dict[str, Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]] = {
    "paste": _fill_paste, "noise": _fill_noise, "shift": _fill_shift}


def make_anomalous(rng: np.random.Generator, crop: np.ndarray, donor: np.ndarray,
                   count: int = 1, grey: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``crop`` (h, w, 3) uint8 with ``count`` generic anomalies; returns (image uint8, mask float32 0..1).
    ``donor`` is another good frame, at least as large as the crop, for the paste fill; ``grey``: the frames
    are a mono camera's (the same value in all three channels), and so are the anomalies."""
    h, w = crop.shape[:2]
    out = crop.astype(np.float32)
    target = np.zeros((h, w), np.float32)
    for _ in range(count):
        kind = FILLS[int(rng.integers(0, len(FILLS)))]
        if kind == "scar":
            mask = make_scar(rng, h, w)
            fill = np.broadcast_to(rng.uniform(0, 255, 3).astype(np.float32), (h, w, 3))
        else:
            mask = random_mask(rng, h, w)
            fill = _FILLERS[kind](rng, out, donor)
        m = (mask * np.float32(rng.uniform(0.5, 1.0)))[:, :, None]
        out = (out * (1 - m) + np.clip(fill, 0, 255) * m).astype(np.float32)
        target = np.maximum(target, mask)
    if grey:
        out[:] = out.mean(axis=2, keepdims=True, dtype=np.float32)
    return np.clip(out, 0, 255).astype(np.uint8), target
