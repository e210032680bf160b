"""Write a labelled YOLO-format dataset from the synthetic conveyor scene.

Layout (what ultralytics and ``edge-agent models eval`` read)::

    OUT/data.yaml
    OUT/images/{train,val}/000000.jpg
    OUT/labels/{train,val}/000000.txt   # "class cx cy w h", normalised 0..1
    OUT/truth/{train,val}/000000.json   # full ground truth incl. faintness

The train and val splits come from different random streams (seed and seed+1),
so no picture appears in both.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import cv2
import numpy as np

from agent.capture.synthetic import DEFAULT_SETTINGS, DEFECT_CLASSES, FrameTruth, SceneSettings, render_still
from agent.errors import DatasetError

ProgressFn = Callable[[str, int, int], None]


def yolo_label_lines(truth: FrameTruth, width: int, height: int) -> list[str]:
    """YOLO label lines for one frame: class id, then centre and size normalised to 0..1."""
    lines = []
    for d in truth.defects:
        x1, y1, x2, y2 = d.box
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        bw, bh = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{d.class_id} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    return lines


def write_synthetic_dataset(
    out: pathlib.Path,
    n_train: int,
    n_val: int,
    seed: int = 0,
    settings: SceneSettings = DEFAULT_SETTINGS,
    progress: ProgressFn | None = None,
) -> pathlib.Path:
    """Render ``n_train`` + ``n_val`` stills into ``out``; returns the data.yaml path."""
    if n_train < 1 or n_val < 1:
        raise DatasetError(f"dataset sizes must be at least 1, got train={n_train} val={n_val}")
    out = pathlib.Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"output folder {out} is not empty; choose a new folder or remove it")
    for split, count, split_seed in (("train", n_train, seed), ("val", n_val, seed + 1)):
        rng = np.random.default_rng(split_seed)
        for sub in ("images", "labels", "truth"):
            (out / sub / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            frame, truth = render_still(rng, settings)
            stem = f"{i:06d}"
            if not cv2.imwrite(str(out / "images" / split / f"{stem}.jpg"), frame,
                               [cv2.IMWRITE_JPEG_QUALITY, 92]):
                raise DatasetError(f"could not write image to {out / 'images' / split}")
            lines = yolo_label_lines(truth, settings.width, settings.height)
            (out / "labels" / split / f"{stem}.txt").write_text("".join(x + "\n" for x in lines))
            (out / "truth" / split / f"{stem}.json").write_text(json.dumps({
                "verdict": truth.verdict,
                "parts": [list(p) for p in truth.parts],
                "defects": [{"label": d.label, "box": list(d.box), "faint": d.faint,
                             "strength": round(d.strength, 3)} for d in truth.defects],
            }))
            if progress is not None:
                progress(split, i + 1, count)
    data_yaml = out / "data.yaml"
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(DEFECT_CLASSES))
    data_yaml.write_text(
        f"# synthetic conveyor dataset, seed {seed}, train {n_train}, val {n_val}\n"
        f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
    )
    return data_yaml
