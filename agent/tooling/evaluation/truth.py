"""Ground truth for ``edge-agent tag --labels PATH`` (I/O): which defect classes each image carries.

Two forms:

* a folder of **YOLO labels** (``labels/`` beside ``images/``, as ``edge-agent dataset synth`` writes them):
  one ``.txt`` per image, ``class cx cy w h`` per line; an empty file is a ``pass`` image. Class ids are
  named by a ``data.yaml`` found in the folder or up to two folders above it (it must list the model's
  classes, in the model's order); without one, ids are the model's class ids.
* a **CSV file** with the header ``image,label``: ``label`` is ``pass`` or a class name; an image with
  several defect classes has one row per class.

An item is matched to its label by the end of its path: the label whose path shares the longest tail with
the item's path (YOLO: both without the suffix), so ``data/images/val/000001.jpg`` finds
``labels/val/000001.txt`` given ``--labels data/labels``, and the CSV row ``000001.jpg``. A tail that several
labels share (``train/1`` and ``val/1`` for ``1.jpg``) names none. Items that no label names (and video
frames) are left out of the evaluation and counted. Class names that are not the model's are a
:class:`DatasetError` naming them.
"""

from __future__ import annotations

import csv
import pathlib
from collections.abc import Mapping, Sequence

from agent.errors import DatasetError
from agent.tooling.evaluation.cascade import PASS_LABEL, Truth
from agent.tooling.evaluation.dataset import _load_yaml, _names_from_yaml, read_labels


def defect_classes(model_classes: Sequence[str]) -> tuple[str, ...]:
    """The model's classes that are defects (a classifier's ``pass`` is not)."""
    return tuple(c for c in model_classes if c != PASS_LABEL)


class GroundTruth:
    """Labels keyed by path tails; :meth:`lookup` an item's path."""

    def __init__(self, source: pathlib.Path, labels: Mapping[tuple[str, ...], Truth]) -> None:
        self.source = source
        self._labels = dict(labels)
        self._tails: dict[tuple[str, ...], list[tuple[str, ...]]] = {}  # a tail of a label's path -> labels
        for key in self._labels:
            for start in range(len(key)):
                self._tails.setdefault(key[start:], []).append(key)

    def __len__(self) -> int:
        return len(self._labels)

    def lookup(self, item_path: str, strip_suffix: bool) -> Truth | None:
        """The label whose path shares the longest tail with ``item_path``; None when none does, or when
        that tail is shared by several labels (ambiguous)."""
        parts = pathlib.PurePath(item_path).parts
        if not parts:
            return None
        if strip_suffix:
            parts = (*parts[:-1], pathlib.PurePath(parts[-1]).stem)
        for start in range(len(parts)):
            tail = parts[start:]
            if tail in self._labels:
                return self._labels[tail]
            keys = self._tails.get(tail)
            if keys:
                return self._labels[keys[0]] if len(keys) == 1 else None
        return None


def read_ground_truth(path: pathlib.Path, model_classes: Sequence[str]) -> tuple[GroundTruth, bool]:
    """The labels at ``path`` and whether items are matched without their suffix (YOLO) or with it (CSV)."""
    if not path.exists():
        raise DatasetError(f"--labels {path} does not exist; expected a folder of YOLO label files or a CSV file "
                           "with the header image,label")
    classes = defect_classes(model_classes)
    if path.is_dir():
        return _read_yolo(path, classes), True
    return _read_csv(path, classes), False


def _yaml_names(folder: pathlib.Path) -> tuple[pathlib.Path, tuple[str, ...]] | None:
    for candidate in (folder, folder.parent, folder.parent.parent):
        yaml_path = candidate / "data.yaml"
        if yaml_path.is_file():
            names = _names_from_yaml(_load_yaml(yaml_path), f"dataset file {yaml_path}")
            if names is not None:
                return yaml_path, names
    return None


def _read_yolo(folder: pathlib.Path, classes: tuple[str, ...]) -> GroundTruth:
    found = _yaml_names(folder)
    if found is not None:
        yaml_path, names = found
        if names != classes:
            extra = [n for n in names if n not in classes]
            missing = [c for c in classes if c not in names]
            detail = "; ".join(x for x in (
                f"not the model's: {', '.join(extra)}" if extra else "",
                f"missing: {', '.join(missing)}" if missing else "",
                "same names in another order" if not extra and not missing else "") if x)
            raise DatasetError(f"--labels {folder}: the classes of {yaml_path} ({', '.join(names)}) do not match "
                               f"the model's ({', '.join(classes)}): {detail}; class ids must mean the same in both")
    labels: dict[tuple[str, ...], Truth] = {}
    for file in sorted(folder.rglob("*.txt")):
        ids, _boxes = read_labels(file, classes)
        rel = file.relative_to(folder).with_suffix("")
        labels[rel.parts] = Truth(frozenset(classes[int(i)] for i in ids))
    if not labels:
        raise DatasetError(f"--labels {folder}: no .txt label files in it; expected YOLO labels "
                           "(labels/ beside images/) or a CSV file with the header image,label")
    return GroundTruth(folder, labels)


def _read_csv(path: pathlib.Path, classes: tuple[str, ...]) -> GroundTruth:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"--labels {path}: cannot read it as a CSV file ({exc})") from exc
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["image", "label"]:
        raise DatasetError(f"--labels {path}: expected a CSV file whose first line is the header image,label")
    found: dict[tuple[str, ...], set[str]] = {}
    unknown: dict[str, int] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DatasetError(f"--labels {path}, line {n}: expected image,label with both filled in, got {row}")
        image, label = row[0].strip(), row[1].strip()
        key = pathlib.PurePath(image).parts
        entry = found.setdefault(key, set())
        if label == PASS_LABEL:
            continue
        if label not in classes:
            unknown.setdefault(label, n)
        entry.add(label)
    if unknown:
        where = ", ".join(f"{k!r} (line {v})" for k, v in unknown.items())
        raise DatasetError(f"--labels {path}: labels that are not the model's classes: {where}; expected pass "
                           f"or one of {', '.join(classes)}")
    if not found:
        raise DatasetError(f"--labels {path}: no rows after the header image,label")
    return GroundTruth(path, {k: Truth(frozenset(v)) for k, v in found.items()})
