"""``models train --new-classes``, ``--time`` and ``--taxonomy``: the checks made before anything slow, and
what a run with a new head is called and trained at. Pure Python on the core dependencies (no torch).

A new head: the dataset's classes are not the base model's, so the base's backbone (every layer but the
class outputs) is kept and the class outputs start afresh. Without ``--new-classes`` the refusal of
``data.check_class_names`` stays (it names the flag). A model yaml base has no classes and no weights
(from scratch): it always gets the dataset's classes. A checkpoint's classes are read when training
starts (``detector``), before the first epoch.
"""

from __future__ import annotations

import math
import pathlib
import re

import cv2

from agent.errors import DatasetError, EdgeAgentError
from agent.tooling.training.base import BaseModel
from agent.tooling.training.data import TrainingData, check_class_names

MAX_DEFAULT_IMGSZ = 1280  # a detector's default input: the dataset's image size, rounded up to 32, at most this


def check_time(time_h: float | None) -> None:
    """``--time`` in hours, like ultralytics' ``time=``: a positive, finite number."""
    if time_h is not None and not (math.isfinite(time_h) and time_h > 0):
        raise EdgeAgentError(f"--time {time_h:g}: expected a training budget in hours above 0, e.g. --time 0.5 "
                             "(30 minutes); leave it out to train for --epochs")


def check_taxonomy(data: TrainingData, taxonomy: pathlib.Path | None) -> None:
    """Every defect class of the dataset must be a label or synonym of the plant's taxonomy, and no two of
    them the same label; the classifier's ``pass`` class is not a defect and is not looked up."""
    if taxonomy is None:
        return
    from agent.config.taxonomy import load_taxonomy
    from agent.tooling.dataset.imports.run import _through_taxonomy

    _through_taxonomy(data.names, load_taxonomy(taxonomy), "pass" if data.task == "classify" else None)


def _same_classes(data: TrainingData, base: BaseModel) -> bool:
    if data.task == "detect":
        return data.names == base.names
    return all(n in base.names for n in data.names if data.counts["train"].get(n) or data.counts["val"].get(n))


def check_classes(data: TrainingData, base: BaseModel, new_classes: bool) -> bool:
    """Whether the run trains a new head; DatasetError when the classes differ without ``--new-classes`` (the
    message names the flag), or ``--new-classes`` is given for the base model's own classes."""
    if base.kind == "yaml":
        return True
    if base.kind == "checkpoint":
        return new_classes
    if not new_classes:
        check_class_names(data, base.names, base.path)
        return False
    if _same_classes(data, base):
        raise DatasetError(f"--new-classes: the dataset's classes ({', '.join(data.names)}) are the base model's "
                           f"({base.path.name}: {', '.join(base.names)}); leave --new-classes out to fine-tune it "
                           "with its head")
    if data.task == "classify" and "pass" not in data.names:
        raise DatasetError(f"--data {data.source}: a frame classifier needs a 'pass' class folder (the good frames) "
                           f"beside its defect classes; it has {', '.join(data.names)}")
    return True


def dataset_imgsz(data: TrainingData) -> int:
    """A detector's input side for the dataset: its first training image's larger side rounded up to a
    multiple of 32, at most MAX_DEFAULT_IMGSZ (small defects stay visible: no downscaling by default)."""
    image = cv2.imread(str(data.train[0]), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"image {data.train[0]}: OpenCV cannot decode it; expected a JPEG, PNG or BMP file")
    side = int(max(image.shape[:2]))
    return min(MAX_DEFAULT_IMGSZ, 32 * math.ceil(side / 32))


def candidate_name(data: TrainingData, base: BaseModel, new_head: bool) -> str:
    """The candidate's file names: the base model's name for a fine-tune; for new classes the dataset
    folder's name before it (``surface-conveyor-yolov8n``), as the model no longer detects the base's classes."""
    if not new_head:
        return base.name
    folder = data.source if data.source.is_dir() else data.source.parent
    slug = re.sub(r"[^A-Za-z0-9]+", "-", folder.resolve().name).strip("-").lower() or "dataset"
    return f"{slug}-{base.name}"
