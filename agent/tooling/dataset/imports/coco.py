"""COCO instances JSON (what CVAT, Label Studio, Roboflow and ``dataset export --format coco`` write).

SOURCE is one ``.json`` file (its images go to train and val by ``--val-fraction``), or a folder with
``annotations/*.json`` whose names say the split (``instances_train*.json`` -> train, ``*val*`` -> val),
as ``dataset export --format coco`` and COCO itself lay it out.

An image's ``file_name`` is looked up under the images folder (``--images``; default: the ``images/``
folder beside ``annotations/``, else the JSON's own folder), then under a subfolder named like the JSON
(``val2017/`` for ``instances_val2017.json``) or like its split (``val/``).

The file's structure is checked with pydantic, one entry at a time, so a bad entry is named by its place
(``images[3].width``) and, with ``--skip-bad``, only its image is left out. Boxes are ``[x, y, w, h]`` in
pixels; crowd annotations are imported as boxes too. Keys edge-agent does not use are ignored.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import DatasetError
from agent.tooling.dataset.imports.common import Box, Item, Parsed, Split

__all__ = ["parse_coco"]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)


class _Image(_Entry):
    id: int
    file_name: str = Field(min_length=1)
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class _Annotation(_Entry):
    id: int | None = None
    image_id: int
    category_id: int
    bbox: list[float] = Field(min_length=4, max_length=4)


class _Category(_Entry):
    id: int
    name: str = Field(min_length=1)


def _errors(exc: ValidationError, where: str) -> str:
    parts = []
    for e in exc.errors(include_url=False)[:3]:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
        parts.append(f"{where}{loc}: {e['msg']}")
    return "; ".join(parts)


def _load(path: pathlib.Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"COCO file {path}: cannot read it ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"COCO file {path}: not valid JSON: {exc.msg} at line {exc.lineno}, column "
                           f"{exc.colno}") from exc
    if not isinstance(doc, dict):
        raise DatasetError(f"COCO file {path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DatasetError(f"COCO file {path}: '{key}' is {'missing' if key not in doc else 'not a list'}; "
                               "expected a COCO instances file with images, annotations and categories lists")
    return doc


def _categories(doc: dict[str, Any], path: pathlib.Path) -> dict[int, str]:
    cats: dict[int, str] = {}
    for i, raw in enumerate(doc["categories"]):
        try:
            cat = _Category.model_validate(raw)
        except ValidationError as exc:
            raise DatasetError(f"COCO file {path}: {_errors(exc, f'categories[{i}]')}") from None
        if cat.id in cats:
            raise DatasetError(f"COCO file {path}: category id {cat.id} is defined twice ({cats[cat.id]!r} and "
                               f"{cat.name!r}); expected one entry per id")
        if cat.name in cats.values():
            raise DatasetError(f"COCO file {path}: category name {cat.name!r} is used by two ids; expected one "
                               "id per class")
        cats[cat.id] = cat.name
    if not cats:
        raise DatasetError(f"COCO file {path}: 'categories' is empty; expected the classes the boxes use")
    return cats


def _split_of(path: pathlib.Path) -> Split:
    name = path.stem.lower()
    if "train" in name:
        return "train"
    if "val" in name:
        return "val"
    raise DatasetError(f"COCO file {path}: its name does not say the split; in an annotations/ folder expected "
                       "instances_train*.json and instances_val*.json (or give one .json file and --val-fraction)")


def _find_image(file_name: str, images: pathlib.Path, json_path: pathlib.Path,
                split: Split | None) -> pathlib.Path:
    stem = json_path.stem.removeprefix("instances_")
    candidates = [images / file_name, images / stem / file_name]
    if split is not None:
        candidates.append(images / split / file_name)
    return next((c for c in candidates if c.is_file()), candidates[0])


def _read_file(doc: dict[str, Any], path: pathlib.Path, images: pathlib.Path, split: Split | None,
               cats: dict[int, str]) -> tuple[list[Item], list[str]]:
    by_id: dict[int, Item] = {}
    items: list[Item] = []
    orphans: list[str] = []
    for i, raw in enumerate(doc["images"]):
        try:
            im = _Image.model_validate(raw)
        except ValidationError as exc:
            orphans.append(f"COCO file {path}: {_errors(exc, f'images[{i}]')}")
            continue
        where = f"{path.name} image id {im.id} ({im.file_name})"
        if im.id in by_id:
            by_id[im.id].problems.append(f"{where}: image id {im.id} is listed twice in {path.name}")
            continue
        item = Item(image=_find_image(im.file_name, images, path, split), where=where, split=split,
                    size=(im.width, im.height))
        by_id[im.id] = item
        items.append(item)
    known = ", ".join(f"{k} {v}" for k, v in sorted(cats.items()))
    for i, raw in enumerate(doc["annotations"]):
        image_id = raw.get("image_id") if isinstance(raw, dict) else None
        target = by_id.get(image_id) if isinstance(image_id, int) else None
        try:
            ann = _Annotation.model_validate(raw)
        except ValidationError as exc:
            message = f"COCO file {path}: {_errors(exc, f'annotations[{i}]')}"
            (target.problems if target is not None else orphans).append(message)
            continue
        name = f"annotation id {ann.id}" if ann.id is not None else f"annotations[{i}]"
        if target is None:
            orphans.append(f"COCO file {path}: {name} refers to image id {ann.image_id}, which the file does not "
                           "list in 'images'")
            continue
        label = cats.get(ann.category_id)
        if label is None:
            target.problems.append(f"{target.where}, {name}: unknown category id {ann.category_id}; the file's "
                                   f"categories are {known}")
            continue
        x, y, w, h = ann.bbox
        target.boxes.append(Box(label, x, y, x + w, y + h, name))
    return items, orphans


def parse_coco(source: pathlib.Path, images: pathlib.Path | None) -> Parsed:
    """Read a COCO file or an ``annotations/`` folder (see the module doc)."""
    if source.is_dir():
        folder = source / "annotations" if (source / "annotations").is_dir() else source
        files = sorted(folder.glob("*.json"))
        if not files:
            raise DatasetError(f"COCO source {source}: no .json files in {folder}; expected a COCO instances file "
                               "or a folder with annotations/instances_train.json and instances_val.json")
        splits: list[Split | None] = [_split_of(f) for f in files]
        default_images = source / "images" if (source / "images").is_dir() else source
    elif source.is_file():
        files, splits = [source], [None]
        parent = source.parent
        default_images = parent.parent / "images" if parent.name == "annotations" and \
            (parent.parent / "images").is_dir() else parent
    else:
        raise DatasetError(f"COCO source {source} does not exist; expected a COCO .json file or a folder with "
                           "annotations/*.json")
    image_root = images if images is not None else default_images
    if not image_root.is_dir():
        raise DatasetError(f"--images {image_root}: not a folder; expected the folder the COCO file_name values "
                           "are relative to")
    first: dict[int, str] = {}
    parsed = Parsed(task="detect", names=(), items=[])
    for path, split in zip(files, splits, strict=True):
        doc = _load(path)
        cats = _categories(doc, path)
        if first and cats != first:
            raise DatasetError(f"COCO file {path}: its categories differ from {files[0].name}'s; expected the same "
                               "category ids and names in every split")
        first = cats
        items, orphans = _read_file(doc, path, image_root, split, cats)
        parsed.items += items
        parsed.orphans += orphans
    parsed.names = tuple(first[k] for k in sorted(first))
    return parsed
