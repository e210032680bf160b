"""Pascal VOC XML (what LabelImg, CVAT and the VOC datasets write): one XML file per image.

SOURCE is a folder: ``Annotations/*.xml`` with images in ``JPEGImages/`` (the VOC layout), or a folder of
``.xml`` files beside their images. ``--images`` overrides where images are looked up (by the XML's
``<filename>``, else the XML's name). When ``ImageSets/Main/train.txt`` and ``val.txt`` exist they give the
split; otherwise ``--val-fraction`` does. The class order is ``labelmap.txt``'s when the folder has one (CVAT's
and Datumaro's VOC exports write it: one ``name:color:parts:actions`` line per class, ``#`` comments), and a
box of a class it does not list is a problem; without it, the classes found, sorted.

XML is parsed with ``defusedxml`` (an annotation file is untrusted input: entity expansion and external
entities are refused). Coordinates are VOC's 1-based pixel indices, ``xmax``/``ymax`` inclusive, read as
detectron2 does: x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax. Objects marked ``difficult`` are
imported like the others.
"""

from __future__ import annotations

import pathlib
import xml.etree.ElementTree as ET

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from agent.errors import DatasetError
from agent.tooling.dataset.imports.common import IMAGE_SUFFIXES, Box, Item, Parsed, Split

__all__ = ["parse_voc"]


def _text(node: ET.Element, path: str) -> str | None:
    found = node.find(path)
    if found is None or found.text is None or not found.text.strip():
        return None
    return found.text.strip()


def _number(node: ET.Element, path: str) -> float | None:
    text = _text(node, path)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _image_for(xml: pathlib.Path, filename: str | None, images: pathlib.Path) -> pathlib.Path:
    if filename is not None:
        return images / pathlib.PurePath(filename).name
    for suffix in IMAGE_SUFFIXES:
        for candidate in (images / (xml.stem + suffix), images / (xml.stem + suffix.upper())):
            if candidate.is_file():
                return candidate
    return images / (xml.stem + ".jpg")


def _read_xml(xml: pathlib.Path, images: pathlib.Path, split: Split | None) -> Item:
    where = f"VOC file {xml}"
    try:
        root: ET.Element | None = DET.parse(str(xml)).getroot()
    except ET.ParseError as exc:
        item = Item(image=images / (xml.stem + ".jpg"), where=where, split=split)
        item.problems.append(f"{where}: broken XML ({exc}); expected a Pascal VOC <annotation> file")
        return item
    except DefusedXmlException as exc:
        item = Item(image=images / (xml.stem + ".jpg"), where=where, split=split)
        item.problems.append(f"{where}: refused, it uses XML entities or a DTD ({type(exc).__name__}); a VOC "
                             "annotation needs neither")
        return item
    except OSError as exc:
        raise DatasetError(f"{where}: cannot read it ({exc.strerror or exc})") from exc
    if root is None or root.tag != "annotation":
        item = Item(image=images / (xml.stem + ".jpg"), where=where, split=split)
        item.problems.append(f"{where}: the root element is <{'nothing' if root is None else root.tag}>; expected "
                             "<annotation>")
        return item
    item = Item(image=_image_for(xml, _text(root, "filename"), images), where=where, split=split)
    width, height = _number(root, "size/width"), _number(root, "size/height")
    if width and height:  # LabelImg writes 0x0 when it did not know the size: the image's own is used
        item.size = (int(width), int(height))
    for i, obj in enumerate(root.findall("object"), start=1):
        label = _text(obj, "name")
        coords = [_number(obj, f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
        if label is None:
            item.problems.append(f"{where}, object {i}: no <name>; expected the class name")
        elif any(v is None for v in coords):
            item.problems.append(f"{where}, object {i} ({label}): <bndbox> needs numeric xmin, ymin, xmax and ymax")
        else:
            xmin, ymin, xmax, ymax = (float(v) for v in coords if v is not None)
            item.boxes.append(Box(label, xmin - 1, ymin - 1, xmax, ymax, f"object {i}"))
    return item


def _splits(source: pathlib.Path) -> dict[str, Split] | None:
    sets = source / "ImageSets" / "Main"
    if not ((sets / "train.txt").is_file() and (sets / "val.txt").is_file()):
        return None
    out: dict[str, Split] = {}
    for split in ("train", "val"):
        for line in (sets / f"{split}.txt").read_text().splitlines():
            if line.strip():
                out[line.split()[0]] = "train" if split == "train" else "val"
    return out


def _labelmap(source: pathlib.Path) -> tuple[str, ...]:
    """The class names of ``source/labelmap.txt`` in its order; () without one."""
    path = source / "labelmap.txt"
    if not path.is_file():
        return ()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"VOC labelmap {path}: cannot read it ({exc})") from exc
    names = [line.split(":", 1)[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names or "" in names or len(set(names)) != len(names):
        raise DatasetError(f"VOC labelmap {path}: expected one 'name:color:parts:actions' line per class, each "
                           f"name once and not empty; found {names}")
    return tuple(names)


def parse_voc(source: pathlib.Path, images: pathlib.Path | None) -> Parsed:
    """Read a VOC folder (see the module doc)."""
    if not source.is_dir():
        raise DatasetError(f"VOC source {source}: not a folder; expected a folder with Annotations/*.xml (or "
                           ".xml files) and the images")
    folder = source / "Annotations" if (source / "Annotations").is_dir() else source
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DatasetError(f"VOC source {source}: no .xml files in {folder}; expected one Pascal VOC XML file "
                           "per image")
    image_root = images if images is not None else (
        source / "JPEGImages" if (source / "JPEGImages").is_dir() else folder)
    splits = _splits(source)
    parsed = Parsed(task="detect", names=(), items=[])
    for xml in files:
        split = None if splits is None else splits.get(xml.stem)
        if splits is not None and split is None:
            parsed.notes.append(f"{xml.name} is in neither ImageSets/Main/train.txt nor val.txt: not imported")
            continue
        parsed.items.append(_read_xml(xml, image_root, split))
    parsed.names = _labelmap(source)  # () without one: the classes of the images imported, sorted
    for item in parsed.items if parsed.names else ():
        item.problems += [f"{item.where}, {b.where}: class {b.label!r} is not in {source / 'labelmap.txt'} "
                          f"({', '.join(parsed.names)})" for b in item.boxes if b.label not in parsed.names]
    return parsed
