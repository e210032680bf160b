"""Write labelled datasets from a synthetic scene (:mod:`agent.capture.scenes`: the colour conveyor,
the default, or the grey surface, whose images are written as single-channel JPEGs).

Detection (``write_synthetic_dataset``), the YOLO layout that ultralytics and
``edge-agent models eval`` read::

    OUT/data.yaml
    OUT/images/{train,val}/000000.jpg
    OUT/labels/{train,val}/000000.txt   # "class cx cy w h", normalised 0..1
    OUT/truth/{train,val}/000000.json   # full ground truth incl. faintness

or the same boxes as COCO JSON or Pascal VOC XML (``fmt``; :mod:`agent.tooling.dataset.labelformats`), for
``dataset import`` (``truth/`` is written in every format).

Classification (``write_classify_dataset``), ultralytics' classify folder layout
(one folder per class; every class gets a folder, empty or not)::

    OUT/dataset.json                    # task, class names in model order, label rule, seed, counts
    OUT/{train,val}/<class>/000000.jpg  # classes: pass, then the scene's defect classes
    OUT/truth/{train,val}.jsonl         # one line per image: file, label, full ground truth

A frame's class is given by :func:`frame_label`: ``pass`` without a visible
defect, else one defect class chosen by the label rule (see there).

The train and val splits come from different random streams (seed and seed+1),
so no picture appears in both; the same seed renders the same pictures in both layouts.
"""

from __future__ import annotations

import collections
import json
import pathlib
from collections.abc import Callable
from typing import Literal, get_args

import cv2
import numpy as np

from agent.capture.scenes import SCENES, Scene
from agent.capture.synthetic import DEFAULT_SETTINGS, DEFECT_CLASSES, SceneSettings, render_still
from agent.core.frame import FrameTruth
from agent.errors import DatasetError
from agent.tooling.dataset.labelformats import LABEL_FORMATS, label_writer

ProgressFn = Callable[[str, int, int], None]
Renderer = Callable[[np.random.Generator], tuple[np.ndarray, FrameTruth]]

PASS_CLASS = "pass"
CLASSIFY_NAMES: tuple[str, ...] = (PASS_CLASS, *DEFECT_CLASSES)
"""Class names of the frame classifier, index = class id: ``pass``, then the defect classes."""
SEVERITY: tuple[str, ...] = SCENES["conveyor"].severity
"""Defect classes, most severe first: material gone, a hole through, a scratch, a (cosmetic) stain."""
LabelRule = Literal["severity", "area"]
LABEL_RULES: tuple[str, ...] = get_args(LabelRule)


def yolo_label_lines(truth: FrameTruth, width: int, height: int,
                     names: tuple[str, ...] = DEFECT_CLASSES) -> list[str]:
    """YOLO label lines for one frame: class id (index in ``names``), then centre and size normalised to 0..1."""
    lines = []
    for d in truth.defects:
        x1, y1, x2, y2 = d.box
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        bw, bh = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{names.index(d.label)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    return lines


def _scene_renderer(scene: str, settings: SceneSettings) -> tuple[Scene, Renderer, int, int]:
    """The scene, a function rendering one still of it, and its frame size. ``settings`` are the conveyor's
    (the surface renders at its own size)."""
    found = SCENES.get(scene)
    if found is None:
        raise DatasetError(f"scene {scene!r}: expected one of {', '.join(SCENES)}")
    if scene == "conveyor":
        return found, lambda rng: render_still(rng, settings), settings.width, settings.height
    if settings is not DEFAULT_SETTINGS:
        raise DatasetError(f"scene {scene!r}: conveyor settings were given; they apply to the conveyor scene only")
    return found, found.render_still, found.size[0], found.size[1]


def write_synthetic_dataset(
    out: pathlib.Path,
    n_train: int,
    n_val: int,
    seed: int = 0,
    settings: SceneSettings = DEFAULT_SETTINGS,
    progress: ProgressFn | None = None,
    scene: str = "conveyor",
    fmt: str = "yolo",
) -> pathlib.Path:
    """Render ``n_train`` + ``n_val`` stills of ``scene`` into ``out`` with their boxes in ``fmt`` (yolo, coco
    or voc: :mod:`agent.tooling.dataset.labelformats`); returns the data.yaml path (yolo) or ``out``."""
    if n_train < 1 or n_val < 1:
        raise DatasetError(f"dataset sizes must be at least 1, got train={n_train} val={n_val}")
    if fmt not in LABEL_FORMATS:
        raise DatasetError(f"format {fmt!r}: expected one of {', '.join(LABEL_FORMATS)}")
    info, render, width, height = _scene_renderer(scene, settings)
    out = pathlib.Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"output folder {out} is not empty; choose a new folder or remove it")
    writer = label_writer(fmt, out, info.classes, (width, height),
                          f"synthetic {scene} dataset, seed {seed}, train {n_train}, val {n_val}")
    for split, count, split_seed in (("train", n_train, seed), ("val", n_val, seed + 1)):
        rng = np.random.default_rng(split_seed)
        (out / "truth" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            frame, truth = render(rng)
            writer.add(split, i, frame, truth)
            (out / "truth" / split / f"{i:06d}.json").write_text(json.dumps({
                "verdict": truth.verdict,
                "parts": [list(p) for p in truth.parts],
                "defects": [{"label": d.label, "box": list(d.box), "faint": d.faint,
                             "strength": round(d.strength, 3)} for d in truth.defects],
            }))
            if progress is not None:
                progress(split, i + 1, count)
    return writer.finish()


def frame_label(truth: FrameTruth, rule: LabelRule = "severity", severity: tuple[str, ...] = SEVERITY) -> str:
    """The class of a whole frame: ``pass`` when no defect is visible, else

    * ``severity`` (default): the most severe defect class present (order ``severity``: the scene's,
      the conveyor's :data:`SEVERITY` by default), whatever
      its size or faintness: what a line acts on first. About a quarter of the frames show two
      defect types; this rule is a presence test a classifier can learn, and it is the label a line
      engineer wants for such a frame.
    * ``area``: the class whose boxes cover the largest total area (ties: the more severe class).
    """
    if not truth.defects:
        return PASS_CLASS
    if rule == "severity":
        present = {d.label for d in truth.defects}
        return next(c for c in severity if c in present)
    if rule == "area":
        areas: dict[str, float] = collections.defaultdict(float)
        for d in truth.defects:
            x1, y1, x2, y2 = d.box
            areas[d.label] += (x2 - x1) * (y2 - y1)
        return max(severity, key=lambda c: (areas.get(c, -1.0), -severity.index(c)))
    raise DatasetError(f"label rule {rule!r}: expected one of {', '.join(LABEL_RULES)}")


def write_classify_dataset(
    out: pathlib.Path,
    n_train: int,
    n_val: int,
    seed: int = 0,
    settings: SceneSettings = DEFAULT_SETTINGS,
    progress: ProgressFn | None = None,
    rule: LabelRule = "severity",
    scene: str = "conveyor",
) -> pathlib.Path:
    """Render ``n_train`` + ``n_val`` stills of ``scene`` into ``out`` in the classify folder layout
    (see the module docstring); returns ``out``. Deterministic for a seed."""
    if n_train < 1 or n_val < 1:
        raise DatasetError(f"dataset sizes must be at least 1, got train={n_train} val={n_val}")
    info, render, width, height = _scene_renderer(scene, settings)
    names = (PASS_CLASS, *info.classes)
    if rule not in LABEL_RULES:
        raise DatasetError(f"label rule {rule!r}: expected one of {', '.join(LABEL_RULES)}")
    out = pathlib.Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"output folder {out} is not empty; choose a new folder or remove it")
    counts: dict[str, dict[str, int]] = {}
    (out / "truth").mkdir(parents=True, exist_ok=True)
    for split, count, split_seed in (("train", n_train, seed), ("val", n_val, seed + 1)):
        rng = np.random.default_rng(split_seed)
        for name in names:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        per_class = dict.fromkeys(names, 0)
        lines = []
        for i in range(count):
            frame, truth = render(rng)
            label = frame_label(truth, rule, info.severity)
            rel = f"{split}/{label}/{i:06d}.jpg"
            if not cv2.imwrite(str(out / rel), frame, [cv2.IMWRITE_JPEG_QUALITY, 92]):
                raise DatasetError(f"could not write image to {out / split / label}")
            per_class[label] += 1
            lines.append(json.dumps({
                "file": rel, "label": label, "verdict": truth.verdict,
                "defects": [{"label": d.label, "box": [round(v, 1) for v in d.box], "faint": d.faint,
                             "strength": round(d.strength, 3)} for d in truth.defects],
            }))
            if progress is not None:
                progress(split, i + 1, count)
        (out / "truth" / f"{split}.jsonl").write_text("".join(x + "\n" for x in lines))
        counts[split] = per_class
    (out / "dataset.json").write_text(json.dumps({
        "task": "classify", "names": list(names), "label_rule": rule, "seed": seed,
        "source": f"{info.description} (agent.capture.scenes, scene {scene})",
        "size": [width, height], "counts": counts,
    }, indent=1) + "\n")
    return out
