"""The good frames an anomaly model learns from, and the checks on them (no torch).

``--data`` may be given more than once; each is either

* a folder of images (searched recursively: .jpg, .jpeg, .png, .bmp), every one a good part; or
* a folder the agent's dataset recorder wrote (``records/*.json`` beside ``*.jpg``): the frames the VLM called
  ``pass`` are good (the flywheel: frames the model scored high but the VLM passed join the good set at the next
  training, and are counted as such); every other record is left out.

Checks, with the numbers: at least :data:`MIN_GOOD` images (an error below; a warning below
:data:`FEW_GOOD`); images of different sizes are a warning (each is resized to the model input, so a crop or a
different camera changes what "good" means); undecodable images are an error naming them.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from agent.errors import DatasetError

MIN_GOOD = 30  # fewer good images than this cannot give a threshold (20 % held out) or a model
FEW_GOOD = 200  # fewer: the threshold at 1 % false rejects rests on fewer than 40 held-out frames
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
HIGH_CONFIDENCE = 0.5  # a recorded frame at or above this anomaly confidence was over the model's threshold


@dataclasses.dataclass(frozen=True)
class GoodSet:
    paths: tuple[pathlib.Path, ...]
    sources: tuple[str, ...]  # one line per --data: what was taken from it
    vlm_passed_high: int  # recorded frames the model scored high that the VLM called pass (the flywheel)
    sizes: dict[tuple[int, int], int]  # (width, height) -> images

    @property
    def mixed_sizes(self) -> bool:
        return len(self.sizes) > 1


def _folder_images(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _recorded_passes(folder: pathlib.Path) -> tuple[list[pathlib.Path], int, int]:
    """(the frames the VLM called pass, how many of them the model had scored high, records left out)."""
    taken: list[pathlib.Path] = []
    high, left = 0, 0
    for doc_path in sorted((folder / "records").glob("*.json")):
        try:
            doc = json.loads(doc_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"record {doc_path}: cannot read it as JSON ({exc})") from exc
        vlm = doc.get("vlm") if isinstance(doc, dict) else None
        image = doc_path.with_suffix(".jpg")
        if not isinstance(vlm, dict) or vlm.get("verdict") != "pass" or not image.exists():
            left += 1
            continue
        taken.append(image)
        detections = doc.get("detections") or []
        if doc.get("model", {}).get("task") == "anomaly" and any(
                d.get("box") is None and float(d.get("confidence", 0)) >= HIGH_CONFIDENCE for d in detections):
            high += 1
    return taken, high, left


def collect_good(data: Sequence[pathlib.Path]) -> GoodSet:
    """Every good image the ``--data`` folders hold, with the sizes; DatasetError naming what is wrong."""
    paths: list[pathlib.Path] = []
    sources: list[str] = []
    high_total = 0
    for folder in data:
        if not folder.is_dir():
            raise DatasetError(f"--data {folder}: not a folder; expected a folder of good images or a folder the "
                               "agent's dataset recorder wrote (records/)")
        if (folder / "records").is_dir():
            taken, high, left = _recorded_passes(folder)
            high_total += high
            sources.append(f"{folder}: {len(taken)} frames the VLM called pass ({high} of them over the "
                           f"anomaly model's threshold), {left} other records left out")
        else:
            taken = _folder_images(folder)
            sources.append(f"{folder}: {len(taken)} images")
        paths.extend(taken)
    if len(paths) < MIN_GOOD:
        raise DatasetError(f"{len(paths)} good images in {', '.join(map(str, data))}; an anomaly model needs at "
                           f"least {MIN_GOOD} ({FEW_GOOD} or more for a steady threshold at 1 % false rejects); "
                           f"expected images ({', '.join(IMAGE_SUFFIXES)}) of good parts")
    sizes = collections.Counter(_size(p) for p in paths)
    return GoodSet(tuple(paths), tuple(sources), high_total, dict(sizes))


def _size(path: pathlib.Path) -> tuple[int, int]:
    from agent.tooling.evaluation.dataset import image_size

    return image_size(path)  # DatasetError naming the file when it is not an image


def warnings_for(good: GoodSet) -> list[str]:
    """What a user should know about the good set, with the numbers."""
    out = []
    if len(good.paths) < FEW_GOOD:
        held = max(10, round(len(good.paths) * 0.2))  # as run.split_good holds out
        out.append(f"only {len(good.paths)} good images; {FEW_GOOD} or more give a steadier model and threshold "
                   f"(the threshold at 1 % false rejects rests on the {held} held out)")
    if good.mixed_sizes:
        listed = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(good.sizes.items(), key=lambda kv: -kv[1]))
        out.append(f"the good images have {len(good.sizes)} different sizes ({listed}); each is resized to the "
                   "model input, so frames from another camera or crop change what 'good' means: train one model "
                   "per camera view")
    return out


def load_frames(paths: Sequence[pathlib.Path], width: int, height: int,
                progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """The images as BGR uint8 at the model input (area-resized, stretched as the agent will)."""
    frames = []
    for i, path in enumerate(paths, start=1):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"image {path}: OpenCV cannot decode it; expected a JPEG, PNG or BMP file")
        frames.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
        if progress is not None:
            progress(i, len(paths))
    return frames
