"""YOLO folders (what ultralytics, Roboflow, CVAT "YOLO 1.1" and LabelImg write).

SOURCE is a ``data.yaml`` or a folder with one (``names`` and the ``train``/``val`` splits, labels found by
putting ``labels/`` in place of ``images/``), or a flat folder of images with their ``.txt`` label files
beside them and the class names in ``classes.txt`` or ``obj.names`` (split by ``--val-fraction``).
A missing label file means an image without defects, as in YOLO. Each label line is checked by
:func:`agent.tooling.evaluation.dataset.read_labels` (fields, class id range, coordinates in 0..1).
"""

from __future__ import annotations

import pathlib

from agent.errors import DatasetError
from agent.tooling.dataset.imports.common import IMAGE_SUFFIXES, SPLITS, Box, Item, Parsed, Split
from agent.tooling.evaluation.dataset import _from_yaml, _load_yaml, _names_from_yaml, label_path, read_labels

__all__ = ["parse_yolo"]

NAME_FILES = ("classes.txt", "obj.names")


def _add(parsed: Parsed, image: pathlib.Path, beside: bool, split: Split | None) -> None:
    """The image and its labels: the ``.txt`` beside it, or (``beside`` false) under ``labels/``."""
    item = Item(image=image, where=f"image {image}", split=split, normalised=True)
    try:
        labels = image.with_suffix(".txt") if beside else label_path(image)
        classes, boxes = read_labels(labels, parsed.names)
    except DatasetError as exc:
        item.problems.append(str(exc))
    else:
        for n, (cls, (x1, y1, x2, y2)) in enumerate(zip(classes, boxes, strict=True), start=1):
            item.boxes.append(Box(parsed.names[int(cls)], float(x1), float(y1), float(x2), float(y2),
                                  f"label {labels.name} box {n}"))
    parsed.items.append(item)


def _from_data_yaml(path: pathlib.Path) -> Parsed:
    names = _names_from_yaml(_load_yaml(path), f"dataset file {path}")
    if not names:
        raise DatasetError(f"dataset file {path}: no 'names'; expected the class names, in class id order")
    parsed = Parsed(task="detect", names=names, items=[])
    doc = _load_yaml(path)
    splits = [s for s in SPLITS if doc.get(s)]
    if not splits:
        raise DatasetError(f"dataset file {path}: neither a 'train' nor a 'val' split; expected both")
    if "test" in doc:
        parsed.notes.append(f"{path}: the 'test' split is not imported (train and val are)")
    for split in splits:
        _root, _names, images = _from_yaml(path, split)
        for image in images:
            if image.suffix.lower() in IMAGE_SUFFIXES:
                _add(parsed, image, False, split if len(splits) == 2 else None)
    return parsed


def _from_flat(folder: pathlib.Path, names_file: pathlib.Path) -> Parsed:
    try:
        names = tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"class names file {names_file}: cannot read it ({exc})") from exc
    if not names:
        raise DatasetError(f"class names file {names_file} is empty; expected one class name per line")
    parsed = Parsed(task="detect", names=names, items=[])
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        _add(parsed, image, True, None)
    return parsed


def parse_yolo(source: pathlib.Path, images: pathlib.Path | None) -> Parsed:
    """Read a YOLO dataset (see the module doc)."""
    if images is not None:
        raise DatasetError("--images does not apply to YOLO folders: images are found through data.yaml or "
                           "beside their label files")
    if source.is_file() and source.suffix in (".yaml", ".yml"):
        return _from_data_yaml(source)
    if source.is_dir() and (source / "data.yaml").is_file():
        return _from_data_yaml(source / "data.yaml")
    if source.is_dir():
        for name in NAME_FILES:
            if (source / name).is_file():
                return _from_flat(source, source / name)
        raise DatasetError(f"YOLO source {source}: no data.yaml, {' or '.join(NAME_FILES)}; expected a data.yaml "
                           "with names and train/val, or images with .txt labels and a classes.txt")
    raise DatasetError(f"YOLO source {source} does not exist; expected a data.yaml or a YOLO dataset folder")
