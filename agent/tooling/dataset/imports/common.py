"""What every importer hands over: items (an image with its boxes or its image-level label, and the problems
found with it), and the checks every format shares (the image file, the boxes against the decoded image).

A problem is attached to its image, so ``--skip-bad`` drops the whole image: dropping one bad box and keeping
the image would teach a model that the defect there is background.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Literal

import cv2
import numpy as np

from agent.tooling.evaluation.dataset import IMAGE_SUFFIXES

__all__ = ["BOX_SLACK_PX", "IMAGE_SUFFIXES", "SPLITS", "Box", "Item", "Parsed", "Split", "Task", "check_item"]

Split = Literal["train", "val"]
Task = Literal["detect", "classify"]
SPLITS: tuple[Split, ...] = ("train", "val")
BOX_SLACK_PX = 1.0
"""A box may reach this far outside its image (rounding, 0- vs 1-based pixel indices in other tools); it is
clipped. Further out is a bad box."""


@dataclasses.dataclass(frozen=True)
class Box:
    """One labelled box: the source's class name and pixel corners (x1, y1, x2, y2), or 0..1 when
    :attr:`Item.normalised`."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    where: str  # how the source names it, for messages ("annotation id 7", "object 2")


@dataclasses.dataclass
class Item:
    """One image of the source."""

    image: pathlib.Path
    where: str  # how the source names the image, for messages
    split: Split | None = None  # from the source; None: assigned by --val-fraction
    size: tuple[int, int] | None = None  # (width, height) the annotation states, checked against the file
    boxes: list[Box] = dataclasses.field(default_factory=list)
    label: str | None = None  # image-level class (classification sources)
    normalised: bool = False  # boxes are 0..1 (YOLO), scaled once the image's size is known
    problems: list[str] = dataclasses.field(default_factory=list)
    decoded_size: tuple[int, int] | None = None  # set by check_item


@dataclasses.dataclass
class Parsed:
    """A whole source: its task, its class names in their order, its images, and problems tied to no image
    (an annotation of an image the file does not list)."""

    task: Task
    names: tuple[str, ...]
    items: list[Item]
    orphans: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def check_item(item: Item) -> None:
    """Add the problems of ``item``'s image file and boxes; clip boxes within :data:`BOX_SLACK_PX`, scale
    normalised boxes to pixels, and set :attr:`Item.decoded_size`."""
    size = _decode_size(item)
    if size is None:
        return
    w, h = size
    item.decoded_size = size
    if item.size is not None and item.size != size:
        item.problems.append(f"{item.where}: the annotation says {item.size[0]}x{item.size[1]} pixels but the "
                             f"image {item.image} is {w}x{h}; expected the size of the annotated image")
        return
    boxes = []
    for b in item.boxes:
        if item.normalised:
            b = dataclasses.replace(b, x1=b.x1 * w, y1=b.y1 * h, x2=b.x2 * w, y2=b.y2 * h)
        problem = _box_problem(b, w, h)
        if problem:
            item.problems.append(f"{item.where}, {b.where} ({b.label}): {problem}")
            continue
        boxes.append(dataclasses.replace(b, x1=max(b.x1, 0.0), y1=max(b.y1, 0.0), x2=min(b.x2, float(w)),
                                         y2=min(b.y2, float(h))))
    item.boxes = boxes
    item.normalised = False


def _decode_size(item: Item) -> tuple[int, int] | None:
    path = item.image
    if not path.is_file():
        item.problems.append(f"{item.where}: image file {path} does not exist"
                             + (" (it is a folder)" if path.is_dir() else ""))
        return None
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        item.problems.append(f"{item.where}: image file {path} is not a {'/'.join(IMAGE_SUFFIXES)} image")
        return None
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        item.problems.append(f"{item.where}: image file {path} cannot be read ({exc.strerror or exc})")
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None or image.size == 0:
        item.problems.append(f"{item.where}: image file {path} cannot be decoded ({data.size} bytes); expected "
                             "a JPEG, PNG or BMP image")
        return None
    return int(image.shape[1]), int(image.shape[0])


def _box_problem(b: Box, w: int, h: int) -> str | None:
    values = (b.x1, b.y1, b.x2, b.y2)
    text = f"box ({b.x1:g}, {b.y1:g}, {b.x2:g}, {b.y2:g})"
    if not all(np.isfinite(values)):
        return f"{text} has a coordinate that is not a number"
    if b.x2 - b.x1 <= 0 or b.y2 - b.y1 <= 0:
        return f"{text} has zero or negative area; expected x2 > x1 and y2 > y1"
    s = BOX_SLACK_PX
    if b.x1 < -s or b.y1 < -s or b.x2 > w + s or b.y2 > h + s:
        return f"{text} lies outside the {w}x{h} image; expected 0 <= x <= {w} and 0 <= y <= {h}"
    if min(b.x2, w) - max(b.x1, 0) <= 0 or min(b.y2, h) - max(b.y1, 0) <= 0:
        return f"{text} has no area inside the {w}x{h} image"
    return None
