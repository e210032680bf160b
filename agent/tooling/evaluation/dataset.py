"""Read a YOLO-format labelled dataset, and run a detector over it.

Two ways in:

* a ``data.yaml`` (ultralytics style): ``path`` is the root (relative to the
  yaml's folder; the yaml's folder when missing), the split key (``val``,
  ``train``, ``test``) names an image folder, a ``.txt`` list of images, or a
  list of those, relative to the root; ``names`` is a list or ``{id: name}``.
* a folder with ``images/<split>/`` and ``labels/<split>/`` (what
  ``edge-agent dataset synth`` writes). A ``data.yaml`` in it gives the class
  names; its ``path`` is *not* followed (a copied dataset keeps the old path).
  A folder without ``images/<split>/`` but with a ``data.yaml`` is read through the yaml.

Labels are found as ultralytics finds them: the last ``images`` folder in the
image's path becomes ``labels`` and the suffix ``.txt``. A missing label file
means an image without objects. Each line is ``class cx cy w h``, normalised
to 0..1; boxes come back in pixels (xyxy) of the image as stored.
"""

from __future__ import annotations

import dataclasses
import pathlib
import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import cv2
import numpy as np
import yaml

from agent.core.detections import PrefilterResult
from agent.errors import DatasetError
from agent.tooling.evaluation.detection import DetectionEvaluator, DetectionMetrics

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_COORD_SLACK = 1e-3  # normalised coordinates a hair outside 0..1 (rounding in other tools) are clipped


@dataclasses.dataclass(frozen=True)
class LabelledImage:
    path: pathlib.Path
    width: int
    height: int
    classes: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) float64 xyxy in pixels of this image


@dataclasses.dataclass(frozen=True)
class YoloDataset:
    source: pathlib.Path  # the data.yaml or the folder given
    root: pathlib.Path
    split: str
    names: tuple[str, ...] | None  # None: a folder without data.yaml and no names passed in
    images: tuple[LabelledImage, ...]
    notes: tuple[str, ...] = ()  # things a user should know (a data.yaml pointing elsewhere)

    @property
    def object_count(self) -> int:
        return sum(int(im.classes.shape[0]) for im in self.images)


# -- image size from the file header -------------------------------------------------------------


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return int(w), int(h)
        i += 2 + length
    return None


def image_size(path: pathlib.Path) -> tuple[int, int]:
    """(width, height) from the JPEG/PNG/BMP header; decodes the image when the header is unusual."""
    try:
        with path.open("rb") as f:
            head = f.read(64 * 1024)
            if head[:2] == b"\xff\xd8":
                size = _jpeg_size(head)
                if size is None:  # SOF beyond the first 64 KiB (a large EXIF thumbnail)
                    size = _jpeg_size(head + f.read())
                if size is not None and min(size) > 0:
                    return size
    except OSError as exc:
        raise DatasetError(f"image {path}: cannot read it ({exc.strerror or exc})") from exc
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        if w > 0 and h > 0:
            return int(w), int(h)
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        if w > 0 and h != 0:
            return int(w), abs(int(h))
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"image {path}: not a readable JPEG, PNG or BMP file")
    return int(image.shape[1]), int(image.shape[0])


# -- labels ------------------------------------------------------------------------------------------


def label_path(image: pathlib.Path) -> pathlib.Path:
    """``.../images/x/a.jpg`` -> ``.../labels/x/a.txt`` (the last ``images`` folder)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return pathlib.Path(*parts).with_suffix(".txt")
    raise DatasetError(f"image {image} is not inside an images/ folder; YOLO labels are found by putting "
                       "labels/ in place of images/ (images/val/a.jpg -> labels/val/a.txt)")


def read_labels(path: pathlib.Path, names: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Class ids (N,) and normalised xyxy boxes (N, 4) of one label file; empty when it does not exist."""
    if not path.exists():
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float64)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"label file {path}: cannot read it as text ({exc})") from exc
    classes: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"label file {path}, line {n}"
        if len(fields) != 5:
            raise DatasetError(f"{where}: expected 5 numbers 'class cx cy w h', got {len(fields)} fields: "
                               f"{line.strip()[:80]!r}" + (" (segmentation polygons are not read)"
                                                           if len(fields) > 5 else ""))
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DatasetError(f"{where}: expected 5 numbers 'class cx cy w h', got {line.strip()[:80]!r}") from None
        cls = values[0]
        if not cls.is_integer() or cls < 0:
            raise DatasetError(f"{where}: class id {fields[0]!r} is not a whole number >= 0")
        if names is not None and cls >= len(names):
            raise DatasetError(f"{where}: class id {int(cls)} is out of range; the dataset has {len(names)} "
                               f"classes (0..{len(names) - 1}: {', '.join(names)})")
        cx, cy, w, h = values[1:]
        if not all(np.isfinite(values[1:])) or w < 0 or h < 0 or \
                min(cx - w / 2, cy - h / 2) < -_COORD_SLACK or max(cx + w / 2, cy + h / 2) > 1 + _COORD_SLACK:
            raise DatasetError(f"{where}: box cx={cx} cy={cy} w={w} h={h} is not normalised to 0..1 "
                               "(YOLO labels divide by the image width and height)")
        classes.append(int(cls))
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    if not boxes:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float64)
    return np.asarray(classes, np.int64), np.clip(np.asarray(boxes, np.float64), 0.0, 1.0)


# -- the dataset ---------------------------------------------------------------------------------------


def _names_from_yaml(doc: dict[str, Any], where: str) -> tuple[str, ...] | None:
    names = doc.get("names")
    if names is None:
        return None
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DatasetError(f"{where}: class ids in 'names' must be 0..n-1, got {keys}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names or not all(isinstance(n, str | int) for n in names):
        raise DatasetError(f"{where}: 'names' must be a list or {{id: name}} map of class names")
    return tuple(str(n) for n in names)


def _load_yaml(path: pathlib.Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(f"dataset file {path}: cannot read it as YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise DatasetError(f"dataset file {path}: expected a mapping with path, val and names keys")
    return doc


def _list_images(entry: pathlib.Path, where: str) -> list[pathlib.Path]:
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if entry.is_file() and entry.suffix == ".txt":
        out = []
        for line in entry.read_text().splitlines():
            if line.strip():
                p = pathlib.Path(line.strip())
                out.append(p if p.is_absolute() else entry.parent / p)
        return out
    raise DatasetError(f"{where}: {entry} does not exist; expected a folder of images or a .txt list of images")


def _yaml_root(path: pathlib.Path, doc: dict[str, Any]) -> pathlib.Path:
    root_value = doc.get("path")
    root = path.parent if not root_value else pathlib.Path(str(root_value))
    return root if root.is_absolute() else path.parent / root


def _from_yaml(path: pathlib.Path, split: str) -> tuple[pathlib.Path, tuple[str, ...] | None, list[pathlib.Path]]:
    doc = _load_yaml(path)
    where = f"dataset file {path}"
    names = _names_from_yaml(doc, where)
    root = _yaml_root(path, doc)
    if not root.is_dir():
        raise DatasetError(f"{where}: dataset root {root} (key 'path') is not a folder")
    entries = doc.get(split)
    if entries is None:
        keys = [k for k in ("train", "val", "test") if doc.get(k)]
        raise DatasetError(f"{where}: no '{split}' split; it has {', '.join(keys) or 'none'} (choose with --split)")
    images: list[pathlib.Path] = []
    for entry in entries if isinstance(entries, list) else [entries]:
        images += _list_images(root / str(entry), where)
    return root, names, images


def read_yolo_dataset(data: pathlib.Path, split: str = "val", names: Sequence[str] | None = None) -> YoloDataset:
    """Every image of ``split`` with its ground truth in pixels. ``names`` (e.g. the model's) is used
    when the dataset itself names no classes; when both exist they must agree."""
    data = pathlib.Path(data)
    if not data.exists():
        raise DatasetError(f"dataset {data} does not exist; expected a data.yaml or a folder with "
                           f"images/{split}/ and labels/{split}/")
    dataset_names: tuple[str, ...] | None
    notes: list[str] = []
    if data.is_file():
        if data.suffix not in (".yaml", ".yml"):
            raise DatasetError(f"dataset {data}: expected a data.yaml file or a dataset folder")
        root, dataset_names, paths = _from_yaml(data, split)
        if root.resolve() != data.parent.resolve() and (data.parent / "images" / split).is_dir():
            notes.append(f"{data} points at {root} (key 'path'); reading that, not the images/{split}/ next to "
                         f"the yaml (give the folder {data.parent} to read those)")
    elif (data / "images" / split).is_dir():
        root = data
        yaml_path = data / "data.yaml"
        dataset_names = None
        if yaml_path.is_file():
            doc = _load_yaml(yaml_path)
            dataset_names = _names_from_yaml(doc, f"dataset file {yaml_path}")
            if _yaml_root(yaml_path, doc).resolve() != data.resolve():
                notes.append(f"{yaml_path} points at {_yaml_root(yaml_path, doc)} (key 'path'); reading this "
                             f"folder's images/{split}/ and taking only the class names from the yaml")
        if not (data / "labels" / split).is_dir():
            raise DatasetError(f"dataset {data}: images/{split}/ exists but labels/{split}/ does not; "
                               "expected one label file per image there")
        paths = _list_images(data / "images" / split, f"dataset {data}")
    elif (data / "data.yaml").is_file():
        root, dataset_names, paths = _from_yaml(data / "data.yaml", split)
    else:
        present = sorted(p.name for p in (data / "images").iterdir() if p.is_dir()) \
            if (data / "images").is_dir() else []
        raise DatasetError(f"dataset {data}: no images/{split}/ folder and no data.yaml"
                           + (f" (images/ has: {', '.join(present)}; choose with --split)" if present else
                              f"; expected images/{split}/ and labels/{split}/"))
    if names is not None and dataset_names is not None and tuple(names) != dataset_names:
        raise DatasetError(f"dataset {data}: its classes ({', '.join(dataset_names)}) are not the model's "
                           f"({', '.join(names)}); class ids must mean the same in both")
    use_names = dataset_names if dataset_names is not None else (tuple(names) if names is not None else None)
    paths = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
    if not paths:
        raise DatasetError(f"dataset {data}: no images in split '{split}' (looked for "
                           f"{', '.join(IMAGE_SUFFIXES)})")
    images = []
    for p in paths:
        if not p.is_file():
            raise DatasetError(f"dataset {data}: image {p} is listed but does not exist")
        classes, norm = read_labels(label_path(p), use_names)
        w, h = image_size(p)
        images.append(LabelledImage(p, w, h, classes, norm * np.array([w, h, w, h], np.float64)))
    return YoloDataset(source=data, root=root, split=split, names=use_names, images=tuple(images),
                       notes=tuple(notes))


# -- running a detector over it ------------------------------------------------------------------------


class DetectorLike(Protocol):
    def infer(self, image: np.ndarray) -> PrefilterResult: ...


ProgressFn = Callable[[int, int], None]


def evaluate_detector(detector: DetectorLike, dataset: YoloDataset, names: Sequence[str],
                      progress: ProgressFn | None = None,
                      on_result: Callable[[LabelledImage, PrefilterResult], None] | None = None) -> DetectionMetrics:
    """Run ``detector`` on every image of ``dataset`` and compute the metrics.
    ``on_result`` sees every image's result (the quantization gate compares verdicts with it)."""
    evaluator = DetectionEvaluator(names)
    total = len(dataset.images)
    for i, item in enumerate(dataset.images, start=1):
        image = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"image {item.path}: OpenCV cannot decode it; expected a JPEG, PNG or BMP file")
        h, w = image.shape[:2]
        boxes = item.boxes
        if (w, h) != (item.width, item.height):  # EXIF rotation applied on decode: labels follow the decoded image
            boxes = boxes / np.array([item.width, item.height] * 2) * np.array([w, h, w, h], np.float64)
        result = detector.infer(image)
        if on_result is not None:
            on_result(item, result)
        dets = result.detections
        evaluator.add_image(
            item.classes, boxes,
            np.array([d.class_id for d in dets], np.int64),
            np.array([d.confidence for d in dets], np.float64),
            np.array([d.box for d in dets], np.float64).reshape(-1, 4),
        )
        if progress is not None:
            progress(i, total)
    return evaluator.compute()
