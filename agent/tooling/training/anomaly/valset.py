"""The labelled set an anomaly candidate is judged on when training (threshold report, INT8 gate), written in
the YOLO layout ``models eval`` and ``models quantize --val`` read: the held-out good frames as they are (no
boxes), the same frames each with generic synthetic anomalies (:mod:`.synth`, seeded; a box around each), and
the user's labelled defects when ``--defects`` gave some (their images with boxes)."""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Sequence

import cv2
import numpy as np

from agent.tooling.training.anomaly.synth import make_anomalous

SPLIT = "val"


def _boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    count, _labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0.5).astype(np.uint8), connectivity=8)
    return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, _a in stats[1:count]]


def _write(root: pathlib.Path, name: str, image: np.ndarray, boxes: Sequence[tuple[float, float, float, float]]
           ) -> None:
    h, w = image.shape[:2]
    cv2.imwrite(str(root / "images" / SPLIT / f"{name}.png"), image)
    lines = [f"0 {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
             for x1, y1, x2, y2 in boxes]
    (root / "labels" / SPLIT / f"{name}.txt").write_text("".join(line + "\n" for line in lines))


def write_validation_set(root: pathlib.Path, held_out: Sequence[np.ndarray], donors: Sequence[np.ndarray],
                         seed: int, grey: bool, defects: Sequence[tuple[pathlib.Path, pathlib.Path]] = ()) -> int:
    """Write the set under ``root`` (images/val, labels/val, data.yaml); returns how many images.
    ``defects``: (image, YOLO label file) pairs copied as they are."""
    for sub in ("images", "labels"):
        (root / sub / SPLIT).mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(f"path: .\nval: images/{SPLIT}\nnames: {{0: anomaly}}\n")
    rng = np.random.default_rng(seed)
    for i, frame in enumerate(held_out):
        _write(root, f"good-{i:04d}", frame, [])
        donor = donors[int(rng.integers(0, len(donors)))]
        image, mask = make_anomalous(rng, frame, donor, int(rng.integers(1, 3)), grey)
        _write(root, f"synthetic-{i:04d}", image, _boxes(mask))
    for j, (image_path, label_path) in enumerate(defects):
        target = root / "images" / SPLIT / f"defect-{j:04d}{image_path.suffix.lower()}"
        shutil.copyfile(image_path, target)
        lines = [ln.split() for ln in label_path.read_text().splitlines() if ln.strip()]
        (root / "labels" / SPLIT / f"defect-{j:04d}.txt").write_text(
            "".join("0 " + " ".join(parts[1:5]) + "\n" for parts in lines))
    return 2 * len(held_out) + len(defects)


def write_calibration_frames(folder: pathlib.Path, frames: Sequence[np.ndarray], count: int, seed: int,
                             grey: bool) -> int:
    """``count`` frames spread over ``frames`` as PNGs in ``folder``, every second one with generic synthetic
    anomalies: INT8 ranges calibrated on good frames alone clip the large logits anomalies give, and squeeze the
    high scores (measured: a score of 0.94 came out of INT8 as 0.65); with them in, the scores stay (correlation
    0.9999 with FP32's)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    picked = np.linspace(0, len(frames) - 1, min(count, len(frames))).astype(int)
    for n, i in enumerate(picked):
        image = frames[i]
        if n % 2:
            image, _mask = make_anomalous(rng, image, frames[int(rng.integers(0, len(frames)))],
                                          int(rng.integers(1, 3)), grey)
        cv2.imwrite(str(folder / f"{n:05d}.png"), image)
    return len(picked)
