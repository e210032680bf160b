"""Batch tagging's inputs (I/O): walk the PATHs, tell images and videos by their content, decode items.

Images are JPEG, PNG, BMP and TIFF, recognised by their first bytes whatever their suffix; videos by their
container's first bytes (AVI, MP4/MOV, Matroska/WebM) or their suffix. Anything else in a folder is a
:class:`~agent.tooling.batch.items.BadInput` (``not an image``), as is a file that cannot be read or decoded
(``unreadable``); the run goes on without it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

import cv2
import numpy as np

from agent.errors import BatchError
from agent.tooling.batch.items import BadInput, ItemId

_VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv"})


def sniff_kind(head: bytes, suffix: str) -> Literal["image", "video"] | None:
    """``image`` or ``video`` from a file's first 16 bytes (and, for videos, its suffix); None: neither."""
    if (head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"BM")
            or head.startswith(b"II*\x00") or head.startswith(b"MM\x00*")):
        return "image"
    if ((head.startswith(b"RIFF") and head[8:12] == b"AVI ") or head[4:8] == b"ftyp"
            or head.startswith(b"\x1a\x45\xdf\xa3") or suffix.lower() in _VIDEO_SUFFIXES):
        return "video"
    return None


@dataclasses.dataclass(frozen=True)
class InputFile:
    path: pathlib.Path
    name: str
    """the path as the item ids spell it: the PATH argument joined with the part below it"""
    kind: Literal["image", "video"]
    frames: int = 1
    """items it holds: 1 for an image; for a video, the frames its container announces, divided by the step"""


@dataclasses.dataclass(frozen=True)
class Plan:
    files: tuple[InputFile, ...]
    bad: tuple[BadInput, ...]

    @property
    def planned(self) -> int:
        return sum(f.frames for f in self.files)


def check_paths(paths: Sequence[pathlib.Path]) -> None:
    """BatchError naming every PATH that does not exist, before anything runs."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise BatchError(f"no such file or folder: {', '.join(missing)}")
    if not paths:
        raise BatchError("no PATH given: name image files, folders or videos to tag")


def walk(paths: Sequence[pathlib.Path], video_step: int, exclude: Iterable[pathlib.Path] = ()) -> Plan:
    """Every file under ``paths`` (folders recursively), once, sorted by name; ``exclude``: files to leave out
    (the output and its work files)."""
    check_paths(paths)
    skip = {_key(p) for p in exclude}
    found: dict[str, pathlib.Path] = {}
    for root in paths:
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for fn in filenames:
                    p = pathlib.Path(dirpath) / fn
                    found.setdefault(os.path.normpath(p), p)
        else:
            found.setdefault(os.path.normpath(root), root)
    files: list[InputFile] = []
    bad: list[BadInput] = []
    for name in sorted(found):
        path = found[name]
        if _key(path) in skip:
            continue
        try:
            with path.open("rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            bad.append(BadInput(name, "unreadable", exc.strerror or str(exc)))
            continue
        kind = sniff_kind(head, path.suffix)
        if kind is None:
            bad.append(BadInput(name, "not an image", "not JPEG, PNG, BMP, TIFF or a video"))
        elif kind == "image":
            files.append(InputFile(path, name, "image"))
        else:
            count = _frame_count(path)
            if count is None:
                bad.append(BadInput(name, "unreadable", "not a video OpenCV can open"))
            else:
                files.append(InputFile(path, name, "video", -(-count // video_step)))
    return Plan(tuple(files), tuple(bad))


def _key(path: pathlib.Path) -> str:
    return os.path.normcase(os.path.abspath(path))


def _frame_count(path: pathlib.Path) -> int | None:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        return max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    finally:
        cap.release()


@dataclasses.dataclass(frozen=True)
class Decoded:
    item: ItemId
    image: np.ndarray  # BGR uint8


def decode(file: InputFile, video_step: int, wanted: Callable[[ItemId], bool],
           stopping: Callable[[], bool]) -> Iterator[Decoded | BadInput]:
    """The items of one file, in frame order: those ``wanted`` decoded, the rest passed over without decoding.
    A file that cannot be read or decoded gives one BadInput. Stops early when ``stopping()``."""
    if file.kind == "image":
        item = ItemId(file.name)
        if not wanted(item):
            return
        try:
            data = file.path.read_bytes()
        except OSError as exc:
            yield BadInput(file.name, "unreadable", exc.strerror or str(exc))
            return
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None or image.size == 0:
            yield BadInput(file.name, "unreadable", "cannot be decoded (truncated or corrupt)")
            return
        yield Decoded(item, image)
        return
    cap = cv2.VideoCapture(str(file.path))
    try:
        if not cap.isOpened():
            yield BadInput(file.name, "unreadable", "not a video OpenCV can open")
            return
        index = 0
        while not stopping():
            item = ItemId(file.name, index)
            if index % video_step == 0 and wanted(item):
                ok, image = cap.read()
                if not ok:
                    return
                yield Decoded(item, image)
            elif not cap.grab():
                return
            index += 1
    finally:
        cap.release()
