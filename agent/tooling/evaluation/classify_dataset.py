"""Read a classification dataset in ultralytics' classify folder layout, and run a classifier over it.

Layout (what ``edge-agent dataset synth --task classify`` writes, and what
ultralytics' classify trainer reads)::

    ROOT/<split>/<class name>/<image>.jpg      split: train, val or test

A class is known by its folder name, so the dataset and the model need not
number their classes the same way: folders are matched to the model's class
names. Without a model's names, ``ROOT/dataset.json`` (written by edge-agent)
gives the class order, else the sorted folder names do (ultralytics' rule).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Protocol

import cv2
import numpy as np

from agent.config.models import TriageConfig
from agent.core.detections import PrefilterResult
from agent.errors import DatasetError
from agent.tooling.evaluation.classification import ClassificationMetrics, evaluate_classification
from agent.tooling.evaluation.dataset import IMAGE_SUFFIXES
from agent.triage.policy import decide

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class ClassifiedImage:
    path: pathlib.Path
    class_id: int  # index into ClassifyDataset.names


@dataclasses.dataclass(frozen=True)
class ClassifyDataset:
    source: pathlib.Path  # the root folder given
    split: str
    names: tuple[str, ...]  # class id -> name (the model's names when given)
    images: tuple[ClassifiedImage, ...]  # by class id, then file name

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.names, 0)
        for im in self.images:
            out[self.names[im.class_id]] += 1
        return out


def _dataset_json_names(root: pathlib.Path) -> tuple[str, ...] | None:
    path = root / "dataset.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"dataset file {path}: cannot read it as JSON ({exc})") from exc
    names = doc.get("names") if isinstance(doc, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DatasetError(f"dataset file {path}: expected a JSON object whose 'names' is a list of class names")
    return tuple(names)


def read_classify_dataset(data: pathlib.Path, split: str = "val",
                          names: Sequence[str] | None = None) -> ClassifyDataset:
    """Every image of ``split`` with its class. ``names`` (the model's classes) fixes the class ids;
    a class folder that is not one of them is an error."""
    data = pathlib.Path(data)
    layout = f"a classify dataset folder with {split}/<class>/*.jpg (edge-agent dataset synth --task classify)"
    if not data.exists():
        raise DatasetError(f"dataset {data} does not exist; expected {layout}")
    if not data.is_dir():
        raise DatasetError(f"dataset {data}: a classifier is evaluated on a folder, not a file; expected {layout}")
    split_dir = data / split
    if not split_dir.is_dir():
        if (data / "images").is_dir() or (data / "labels").is_dir() or (data / "data.yaml").is_file():
            raise DatasetError(f"dataset {data} is a YOLO detection dataset (images/, labels/); a classifier needs "
                               f"{layout}")
        present = [s for s in SPLITS if (data / s).is_dir()]
        raise DatasetError(f"dataset {data}: no '{split}' split" + (
            f"; it has {', '.join(present)} (choose with --split)" if present else f"; expected {layout}"))
    loose = sorted(p.name for p in split_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if loose:
        raise DatasetError(f"dataset {data}: images directly in {split}/ ({', '.join(loose[:3])}"
                           f"{', ...' if len(loose) > 3 else ''}); expected one sub-folder per class, {split}/<class>/")
    folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not folders:
        raise DatasetError(f"dataset {data}: {split}/ has no class folders; expected {layout}")
    if names is not None:
        use_names = tuple(names)
        unknown = [f for f in folders if f not in use_names]
        if unknown:
            raise DatasetError(f"dataset {data}: class folder(s) {', '.join(unknown)} in {split}/ are not classes of "
                               f"the model ({', '.join(use_names)}); folder names must be the model's class names")
    else:
        use_names = _dataset_json_names(data) or tuple(folders)
        unknown = [f for f in folders if f not in use_names]
        if unknown:
            raise DatasetError(f"dataset {data}: class folder(s) {', '.join(unknown)} are not in dataset.json's "
                               f"names ({', '.join(use_names)})")
    images = [
        ClassifiedImage(p, use_names.index(folder))
        for folder in folders
        for p in sorted((split_dir / folder).rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    ]
    if not images:
        raise DatasetError(f"dataset {data}: no images in split '{split}' (looked for {', '.join(IMAGE_SUFFIXES)} in "
                           f"{', '.join(folders)})")
    images.sort(key=lambda im: (im.class_id, im.path.name))
    return ClassifyDataset(source=data, split=split, names=use_names, images=tuple(images))


# -- running a classifier over it -----------------------------------------------------------------------


class ClassifierLike(Protocol):
    def infer(self, image: np.ndarray) -> PrefilterResult: ...


ProgressFn = Callable[[int, int], None]


def top1_id(result: PrefilterResult, names: Sequence[str]) -> int:
    """Class id (in ``names``) of the result's most probable class; ties go to the lower class id."""
    if result.task != "classify" or not result.probabilities:
        raise DatasetError(f"model {result.model_id} gave a {result.task} result without class probabilities; "
                           "expected an image classifier")
    got = tuple(n for n, _ in result.probabilities)
    if got != tuple(names):
        raise DatasetError(f"model {result.model_id} names its classes {', '.join(got)}; the dataset's are "
                           f"{', '.join(names)}")
    return int(np.argmax([p for _, p in result.probabilities]))


def evaluate_classifier(classifier: ClassifierLike, dataset: ClassifyDataset, progress: ProgressFn | None = None,
                        on_result: Callable[[ClassifiedImage, PrefilterResult], None] | None = None,
                        ) -> ClassificationMetrics:
    """Run ``classifier`` on every image of ``dataset``; top-1 accuracy, per-class P/R/F1, confusion matrix.
    ``on_result`` sees every image's result (for a triage summary or a quantization gate)."""
    truth: list[int] = []
    predicted: list[int] = []
    total = len(dataset.images)
    for i, item in enumerate(dataset.images, start=1):
        image = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"image {item.path}: OpenCV cannot decode it; expected a JPEG, PNG or BMP file")
        result = classifier.infer(image)
        truth.append(item.class_id)
        predicted.append(top1_id(result, dataset.names))
        if on_result is not None:
            on_result(item, result)
        if progress is not None:
            progress(i, total)
    return evaluate_classification(np.asarray(truth, np.int64), np.asarray(predicted, np.int64), dataset.names)


@dataclasses.dataclass(frozen=True)
class TriageSummary:
    """What the triage band makes of a classifier's results on labelled frames."""

    accept: float
    margin: float
    pass_label: str
    frames: int
    decided: int  # verdict pass or defect, no escalation
    decided_correct: int  # pass on a pass frame, or defect with the true class
    defects_passed: int  # decided pass on a frame that has a defect: the costly mistake
    uncertain: int  # would be escalated

    @property
    def coverage(self) -> float:
        return self.decided / self.frames if self.frames else 0.0

    @property
    def decided_accuracy(self) -> float | None:
        return self.decided_correct / self.decided if self.decided else None


def triage_summary(results: Sequence[tuple[str, PrefilterResult]], band: TriageConfig) -> TriageSummary:
    """``results``: (true class name, classifier result) per frame, judged with ``band``."""
    decided = correct = passed = 0
    for label, result in results:
        decision = decide(result, band)
        if decision.verdict == "uncertain":
            continue
        decided += 1
        if decision.verdict == "pass":
            correct += label == band.pass_label
            passed += label != band.pass_label
        else:
            correct += decision.tags[0].detection.label == label
    return TriageSummary(band.accept, band.margin, band.pass_label, len(results), decided, correct, passed,
                         len(results) - decided)
