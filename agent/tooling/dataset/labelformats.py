"""The labelled formats ``dataset synth --format`` writes a synthetic scene's ground truth in, so that the
scene can go through ``dataset import`` exactly as a plant's own labelled data would:

* ``yolo``  ``OUT/data.yaml``, ``OUT/images/{train,val}/000000.jpg``, ``OUT/labels/{train,val}/000000.txt``
  (``class cx cy w h``, normalised 0..1): what ultralytics and ``models train`` read directly;
* ``coco``  ``OUT/images/{train,val}/000000.jpg``, ``OUT/annotations/instances_{train,val}.json`` (COCO
  instances: ``bbox`` ``[x, y, w, h]`` in pixels, category ids from 1 in the scene's class order), the layout
  ``dataset export --format coco`` writes;
* ``voc``   ``OUT/JPEGImages/{train,val}_000000.jpg``, ``OUT/Annotations/{train,val}_000000.xml`` (Pascal VOC:
  1-based pixel coordinates, ``xmax``/``ymax`` inclusive, written as detectron2 reads them: ``xmin = x1 + 1``,
  ``xmax = x2``), ``OUT/ImageSets/Main/{train,val}.txt`` and ``OUT/labelmap.txt`` (the class order, as CVAT's
  and Datumaro's VOC exports write it).

Boxes are written to 0.001 px, so an import gives back the ground truth's boxes. The JSON and XML are
written with the standard library (``json``, ``xml.etree``): what is written here is our own data, only
reading untrusted XML needs ``defusedxml``.
"""

from __future__ import annotations

import abc
import json
import pathlib
import xml.etree.ElementTree as ET
from typing import Any, Literal, get_args

import cv2
import numpy as np

from agent.core.frame import FrameTruth
from agent.errors import DatasetError

LabelFormat = Literal["yolo", "coco", "voc"]
LABEL_FORMATS: tuple[str, ...] = get_args(LabelFormat)
SPLITS = ("train", "val")
VOC_LABELMAP = "labelmap.txt"
JPEG_QUALITY = 92


def _write_jpeg(path: pathlib.Path, frame: np.ndarray) -> None:
    if not cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise DatasetError(f"could not write image {path}")


def _px(value: float) -> float:
    return round(float(value), 3)


class LabelWriter(abc.ABC):
    """One format: ``add`` writes one frame and its boxes into a split, ``finish`` what goes beside."""

    def __init__(self, out: pathlib.Path, names: tuple[str, ...], size: tuple[int, int], header: str) -> None:
        self.out, self.names, self.size, self.header = out, names, size, header

    @abc.abstractmethod
    def add(self, split: str, index: int, frame: np.ndarray, truth: FrameTruth) -> None:
        """Write frame ``index`` of ``split`` and its labels."""

    @abc.abstractmethod
    def finish(self) -> pathlib.Path:
        """Write what goes beside the images; returns what to name as the dataset (a file or the folder)."""


class YoloWriter(LabelWriter):
    def __init__(self, out: pathlib.Path, names: tuple[str, ...], size: tuple[int, int], header: str) -> None:
        super().__init__(out, names, size, header)
        for sub in ("images", "labels"):
            for split in SPLITS:
                (out / sub / split).mkdir(parents=True, exist_ok=True)

    def add(self, split: str, index: int, frame: np.ndarray, truth: FrameTruth) -> None:
        from agent.tooling.dataset.synth import yolo_label_lines

        _write_jpeg(self.out / "images" / split / f"{index:06d}.jpg", frame)
        lines = yolo_label_lines(truth, self.size[0], self.size[1], self.names)
        (self.out / "labels" / split / f"{index:06d}.txt").write_text("".join(x + "\n" for x in lines))

    def finish(self) -> pathlib.Path:
        data_yaml = self.out / "data.yaml"
        names = "\n".join(f"  {i}: {n}" for i, n in enumerate(self.names))
        data_yaml.write_text(f"# {self.header}\npath: {self.out.resolve()}\ntrain: images/train\nval: images/val\n"
                             f"names:\n{names}\n")
        return data_yaml


class CocoWriter(LabelWriter):
    def __init__(self, out: pathlib.Path, names: tuple[str, ...], size: tuple[int, int], header: str) -> None:
        super().__init__(out, names, size, header)
        for split in SPLITS:
            (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "annotations").mkdir(exist_ok=True)
        self.docs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {"images": [], "annotations": []} for s in SPLITS}

    def add(self, split: str, index: int, frame: np.ndarray, truth: FrameTruth) -> None:
        _write_jpeg(self.out / "images" / split / f"{index:06d}.jpg", frame)
        doc = self.docs[split]
        image_id = index + 1
        doc["images"].append({"id": image_id, "file_name": f"{split}/{index:06d}.jpg", "width": self.size[0],
                              "height": self.size[1]})
        for d in truth.defects:
            x1, y1, x2, y2 = (_px(v) for v in d.box)
            doc["annotations"].append({
                "id": len(doc["annotations"]) + 1, "image_id": image_id, "category_id": self.names.index(d.label) + 1,
                "bbox": [x1, y1, _px(x2 - x1), _px(y2 - y1)], "area": _px((x2 - x1) * (y2 - y1)), "iscrowd": 0,
                "segmentation": []})

    def finish(self) -> pathlib.Path:
        categories = [{"id": i + 1, "name": n, "supercategory": "defect"} for i, n in enumerate(self.names)]
        for split, doc in self.docs.items():
            (self.out / "annotations" / f"instances_{split}.json").write_text(json.dumps(
                {"info": {"description": self.header}, "licenses": [], "images": doc["images"],
                 "annotations": doc["annotations"], "categories": categories}))
        return self.out


class VocWriter(LabelWriter):
    def __init__(self, out: pathlib.Path, names: tuple[str, ...], size: tuple[int, int], header: str) -> None:
        super().__init__(out, names, size, header)
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        self.stems: dict[str, list[str]] = {s: [] for s in SPLITS}

    def add(self, split: str, index: int, frame: np.ndarray, truth: FrameTruth) -> None:
        stem = f"{split}_{index:06d}"
        _write_jpeg(self.out / "JPEGImages" / f"{stem}.jpg", frame)
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "JPEGImages"
        ET.SubElement(root, "filename").text = f"{stem}.jpg"
        size = ET.SubElement(root, "size")
        for key, value in (("width", self.size[0]), ("height", self.size[1]), ("depth", 1 if frame.ndim == 2 else 3)):
            ET.SubElement(size, key).text = str(value)
        for d in truth.defects:
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = d.label
            ET.SubElement(obj, "difficult").text = "1" if d.faint else "0"
            box = ET.SubElement(obj, "bndbox")
            x1, y1, x2, y2 = d.box
            for key, corner in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
                ET.SubElement(box, key).text = str(_px(corner))
        ET.indent(root)
        ET.ElementTree(root).write(self.out / "Annotations" / f"{stem}.xml", encoding="utf-8", xml_declaration=True)
        self.stems[split].append(stem)

    def finish(self) -> pathlib.Path:
        for split, stems in self.stems.items():
            (self.out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(s + "\n" for s in stems))
        (self.out / VOC_LABELMAP).write_text("# label:color_rgb:parts:actions\n"
                                             + "".join(f"{n}:::\n" for n in self.names))
        return self.out


WRITERS: dict[str, type[LabelWriter]] = {"yolo": YoloWriter, "coco": CocoWriter, "voc": VocWriter}


def label_writer(fmt: str, out: pathlib.Path, names: tuple[str, ...], size: tuple[int, int],
                 header: str) -> LabelWriter:
    """The writer of ``fmt`` (one of :data:`LABEL_FORMATS`) into ``out``; DatasetError names the formats."""
    if fmt not in WRITERS:
        raise DatasetError(f"format {fmt!r}: expected one of {', '.join(LABEL_FORMATS)}")
    return WRITERS[fmt](out, names, size, header)
