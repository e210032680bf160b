"""Check a training dataset before anything slow starts: its layout, its class names, every label line.

Two layouts are trained on:

* detection, YOLO: a ``data.yaml`` (given, or in the folder given) with ``names`` and
  ``train``/``val`` splits, images under ``images/`` and one label file per image under
  ``labels/`` (``class cx cy w h`` normalised to 0..1); what ``edge-agent dataset synth``
  and ``edge-agent dataset export --format yolo`` write;
* classification, image folders: ``train/<class>/*.jpg`` and ``val/<class>/*.jpg``
  (``dataset.json`` may give the class order); what ``dataset synth --task classify`` and
  ``dataset export --format imagefolder`` write.

Reading goes through ``agent.tooling.evaluation``'s readers, which check every label line (field
count, class id range, coordinates inside 0..1) and name the file and line of the first bad
one. Pure Python on the core dependencies: no torch.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Literal

from agent.errors import DatasetError
from agent.tooling.evaluation.classify_dataset import _dataset_json_names, read_classify_dataset
from agent.tooling.evaluation.dataset import _load_yaml, _names_from_yaml, read_yolo_dataset

Task = Literal["detect", "classify"]
LAYOUTS = ("a YOLO detection dataset (data.yaml with names/train/val, images/, labels/) or a classification "
           "dataset (train/<class>/*.jpg and val/<class>/*.jpg)")
NEW_CLASSES_HINT = ("give --new-classes to train a new head for the dataset's classes on the base model's backbone "
                    "(its other layers)")


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """A checked dataset: where it is, which task, its classes, and its images per split."""

    source: pathlib.Path  # what --data named
    task: Task
    names: tuple[str, ...]  # class id -> name (detection: the data.yaml's; classification: see class_order)
    train: tuple[pathlib.Path, ...]
    val: tuple[pathlib.Path, ...]
    counts: dict[str, dict[str, int]]  # split -> class -> objects (detection) or images (classification)
    data_yaml: pathlib.Path | None = None  # detection only
    train_classes: tuple[str, ...] = ()  # classification only: each train image's class
    val_classes: tuple[str, ...] = ()

    def describe(self) -> str:
        unit = "objects" if self.task == "detect" else "images"
        per_split = "; ".join(f"{split} {len(images)} images ("
                              + ", ".join(f"{n} {c}" for n, c in self.counts[split].items()) + f" {unit})"
                              for split, images in (("train", self.train), ("val", self.val)))
        return f"{self.source} ({'YOLO detection' if self.task == 'detect' else 'image folders'}): {per_split}"


def _yolo_yaml(path: pathlib.Path) -> pathlib.Path | None:
    if path.is_file():
        return path if path.suffix in (".yaml", ".yml") else None
    candidate = path / "data.yaml"
    return candidate if candidate.is_file() else None


def _is_imagefolder(path: pathlib.Path) -> bool:
    return path.is_dir() and all((path / split).is_dir() and any(p.is_dir() for p in (path / split).iterdir())
                                 for split in ("train", "val"))


def check_training_data(path: pathlib.Path) -> TrainingData:
    """The dataset at ``path``, every image and label checked; DatasetError naming what is wrong."""
    path = pathlib.Path(path)
    if not path.exists():
        raise DatasetError(f"--data {path} does not exist; expected {LAYOUTS}")
    yaml_path = _yolo_yaml(path)
    if yaml_path is not None:
        return _check_yolo(path, yaml_path)
    if _is_imagefolder(path):
        return _check_imagefolder(path)
    if path.is_file():
        raise DatasetError(f"--data {path} is a file but not a data.yaml; expected {LAYOUTS}")
    if (path / "images").is_dir() or (path / "labels").is_dir():
        raise DatasetError(f"--data {path} has images/ and labels/ but no data.yaml; training needs the class "
                           "names: add a data.yaml with 'names', 'train: images/train' and 'val: images/val'")
    splits = [s for s in ("train", "val") if (path / s).is_dir()]
    if splits:
        missing = [s for s in ("train", "val") if s not in splits]
        raise DatasetError(f"--data {path}: has {', '.join(f'{s}/' for s in splits)} but "
                           + (f"no {missing[0]}/" if missing else "no class folders in them")
                           + "; a classification dataset needs train/<class>/*.jpg and val/<class>/*.jpg")
    raise DatasetError(f"--data {path}: no data.yaml and no train/ and val/ class folders; expected {LAYOUTS}")


def _check_yolo(path: pathlib.Path, yaml_path: pathlib.Path) -> TrainingData:
    names = _names_from_yaml(_load_yaml(yaml_path), f"dataset file {yaml_path}")
    if names is None:
        raise DatasetError(f"dataset file {yaml_path}: no 'names'; expected the class names in model order, "
                           "e.g. names: {0: scratch, 1: hole}")
    splits = {}
    counts: dict[str, dict[str, int]] = {}
    for split in ("train", "val"):
        dataset = read_yolo_dataset(path, split)
        splits[split] = tuple(im.path for im in dataset.images)
        per_class = dict.fromkeys(names, 0)
        for im in dataset.images:
            for c in im.classes:
                per_class[names[int(c)]] += 1
        counts[split] = per_class
    return TrainingData(source=path, task="detect", names=names, train=splits["train"], val=splits["val"],
                        counts=counts, data_yaml=yaml_path)


def _check_imagefolder(path: pathlib.Path) -> TrainingData:
    # the class order: dataset.json's, else the sorted class folders of both splits (ultralytics' rule)
    names = _dataset_json_names(path) or tuple(sorted({p.name for split in ("train", "val")
                                                       for p in (path / split).iterdir() if p.is_dir()}))
    train = read_classify_dataset(path, "train", names=names)
    val = read_classify_dataset(path, "val", names=names)
    return TrainingData(source=path, task="classify", names=train.names,
                        train=tuple(im.path for im in train.images), val=tuple(im.path for im in val.images),
                        counts={"train": train.counts(), "val": val.counts()},
                        train_classes=tuple(train.names[im.class_id] for im in train.images),
                        val_classes=tuple(val.names[im.class_id] for im in val.images))


def check_class_names(data: TrainingData, model_names: Sequence[str], model: pathlib.Path) -> None:
    """The dataset's classes must be the base model's: for detection the same names in the same order
    (label files hold class ids); for image folders every folder must be a class of the model (a
    folder is matched by name, so order does not matter, and a class with no folder is allowed)."""
    model_names = tuple(model_names)
    if data.task == "detect":
        if data.names != model_names:
            raise DatasetError(
                f"the dataset's classes are not the base model's: {data.data_yaml} has {len(data.names)} "
                f"({', '.join(f'{i}: {n}' for i, n in enumerate(data.names))}), {model.name} has "
                f"{len(model_names)} ({', '.join(f'{i}: {n}' for i, n in enumerate(model_names))}); class ids "
                f"must mean the same in both (a fine-tune keeps the model's classes); {NEW_CLASSES_HINT}")
        return
    unknown = [n for n in data.names if n not in model_names and (data.counts["train"].get(n) or
                                                                   data.counts["val"].get(n))]
    if unknown:
        raise DatasetError(
            f"the dataset's classes are not the base model's: {data.source} has class folder(s) "
            f"{', '.join(unknown)} (all: {', '.join(data.names)}), {model.name} has "
            f"{', '.join(model_names)}; every class folder must be one of the model's classes (a fine-tune keeps "
            f"the model's classes); {NEW_CLASSES_HINT}")


def task_matches(data: TrainingData, model_task: str, model: pathlib.Path) -> None:
    if data.task != model_task:
        kinds = {"detect": "a detector (YOLO labels)", "classify": "a classifier (image folders)"}
        raise DatasetError(f"--data {data.source} is a dataset for {kinds[data.task]}, but --base {model.name} is "
                           f"{kinds.get(model_task, model_task)}; give a dataset of the base model's kind")
