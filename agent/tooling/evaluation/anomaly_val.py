"""The held-out set an anomaly model is judged on by ``models promote``: a YOLO-layout dataset (an image with no
box is good, one with boxes defective; boxes give the pixel AUROC), or an image-folder dataset such as
``dataset export --format imagefolder`` writes from the VLM's answers (``<split>/pass/`` good, every other class
folder defective; image labels only, so no pixel AUROC).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from agent.errors import DatasetError
from agent.tooling.evaluation.classify_dataset import read_classify_dataset
from agent.tooling.evaluation.dataset import LabelledImage, YoloDataset, image_size, read_yolo_dataset

GOOD_CLASS = "pass"  # dataset export's default --pass-class


def _good_class(data: pathlib.Path) -> str:
    """The pass class the export recorded (export.json beside dataset.json), else ``pass``."""
    for name in ("export.json", "dataset.json"):
        path = data / name
        if path.is_file():
            try:
                doc = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DatasetError(f"dataset file {path}: cannot read it as JSON ({exc})") from exc
            found = doc.get("pass_class") if isinstance(doc, dict) else None
            if isinstance(found, str) and found:
                return found
    return GOOD_CLASS


def is_imagefolder(data: pathlib.Path, split: str) -> bool:
    split_dir = data / split
    return split_dir.is_dir() and any(p.is_dir() for p in split_dir.iterdir())


def has_boxes(dataset: YoloDataset) -> bool:
    """Whether boxes mark where the defects are (False: image labels only, no pixel AUROC)."""
    return any(bool(np.any(im.boxes[:, 2:] > im.boxes[:, :2])) for im in dataset.images if im.boxes.shape[0])


def read_anomaly_valset(data: pathlib.Path, split: str = "val") -> YoloDataset:
    """The labelled images (good: no class; an image-folder dataset gives defective images a class and an empty
    box). DatasetError when the split does not hold both good and defective images (no AUROC without both)."""
    if is_imagefolder(data, split):
        folder = read_classify_dataset(data, split)
        good = _good_class(data)
        if good not in folder.names:
            raise DatasetError(f"dataset {data}: no '{good}' class folder in {split}/ (classes "
                               f"{', '.join(folder.names)}); an anomaly model is judged on good frames ({split}/"
                               f"{good}/) and defective ones (every other class folder)")
        good_id = folder.names.index(good)
        images = []
        for item in folder.images:
            w, h = image_size(item.path)
            n = 0 if item.class_id == good_id else 1
            images.append(LabelledImage(item.path, w, h, np.full(n, item.class_id, np.int64),
                                        np.zeros((n, 4), np.float64)))
        dataset = YoloDataset(source=data, root=data, split=split, names=folder.names, images=tuple(images))
    else:
        dataset = read_yolo_dataset(data, split)
    defective = sum(1 for im in dataset.images if im.classes.shape[0])
    if defective == 0 or defective == len(dataset.images):
        have = "no defective" if defective == 0 else "no good"
        raise DatasetError(f"dataset {data} (split {split}): {len(dataset.images)} images, {have} ones; an anomaly "
                           "model's gate (image AUROC) needs both good and defective held-out images")
    return dataset
