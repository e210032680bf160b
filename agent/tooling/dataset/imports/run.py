"""``edge-agent dataset import``: a labelled dataset in a format plants already have, into edge-agent's layout.

Sources (one module each): ``coco`` (:mod:`.coco`), ``voc`` (:mod:`.voc`), ``yolo`` (:mod:`.yolo`) for
detection; ``csv`` (:mod:`.csvlabels`) of image-level labels for classification. Output, what ``models
train`` / ``models eval`` / ``models quantize --val`` read::

    detection       OUT/data.yaml, OUT/images/{train,val}/<name>, OUT/labels/{train,val}/<stem>.txt
    classification  OUT/{train,val}/<class>/<name>, OUT/dataset.json
    both            OUT/import.json (source, class names and where each came from, counts, what was skipped)

Images are copied byte for byte (a grey image stays grey) after they were decoded and their size checked.
Every problem (a missing or broken image, a box outside its image or of zero area, an unknown category,
broken XML, a bad CSV line) is named; without ``skip_bad`` any problem stops the import, with ``skip_bad``
the images with problems are left out, counted and listed in ``import.json``. Either way ``OUT`` appears
only complete: it is written in a sibling folder and renamed into place at the end.

With a taxonomy, every class name must map to one of its canonical labels (as a label or a synonym), and
the dataset's classes become those canonical labels; a name the taxonomy does not know, or two names that
map to one label, is an error naming them. The classification pass class (``pass_class``) is not a defect
and stays as it is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
import shutil
from collections.abc import Callable

import yaml

from agent.config.taxonomy import load_taxonomy
from agent.errors import DatasetError
from agent.taxonomy.model import Taxonomy
from agent.tooling.dataset.imports.coco import parse_coco
from agent.tooling.dataset.imports.common import SPLITS, Item, Parsed, Split, check_item
from agent.tooling.dataset.imports.csvlabels import parse_csv
from agent.tooling.dataset.imports.voc import parse_voc
from agent.tooling.dataset.imports.yolo import parse_yolo

__all__ = ["FORMATS", "ImportOptions", "ImportSummary", "import_dataset"]

PARSERS: dict[str, Callable[[pathlib.Path, pathlib.Path | None], Parsed]] = {
    "coco": parse_coco, "voc": parse_voc, "yolo": parse_yolo, "csv": parse_csv}
FORMATS: tuple[str, ...] = tuple(PARSERS)
MANIFEST = "import.json"
SHOWN_PROBLEMS = 10


@dataclasses.dataclass(frozen=True)
class ImportOptions:
    source: pathlib.Path
    out: pathlib.Path
    fmt: str
    images: pathlib.Path | None = None  # where the source's image paths are relative to (format default)
    taxonomy: pathlib.Path | None = None
    val_fraction: float = 0.2  # for sources without a split of their own
    seed: int = 0
    skip_bad: bool = False
    pass_class: str = "pass"


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    out: pathlib.Path
    task: str
    names: tuple[str, ...]
    renamed: dict[str, str]  # source class name -> dataset class name, where the taxonomy changed it
    images: dict[str, int]  # split -> images written
    boxes: int
    skipped_images: int
    problems: tuple[str, ...]  # every problem found (with skip_bad: what was left out, and why)
    notes: tuple[str, ...]


def import_dataset(options: ImportOptions) -> ImportSummary:
    """Run the import (see the module doc). DatasetError / ConfigError for bad input; nothing written then."""
    if options.fmt not in PARSERS:
        raise DatasetError(f"--format {options.fmt!r}: expected one of {', '.join(FORMATS)}")
    if not 0.0 <= options.val_fraction < 1.0:
        raise DatasetError(f"--val-fraction {options.val_fraction}: expected 0 <= fraction < 1")
    out = options.out.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"--out {out}: exists and is not an empty folder; choose a new folder")
    taxonomy = None if options.taxonomy is None else load_taxonomy(options.taxonomy)
    parsed = PARSERS[options.fmt](options.source, options.images)
    for item in parsed.items:
        if not item.problems:
            check_item(item)
    problems = parsed.orphans + [p for item in parsed.items for p in item.problems]
    if problems and not options.skip_bad:
        shown = "\n".join(f"  - {p}" for p in problems[:SHOWN_PROBLEMS])
        more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        raise DatasetError(f"{options.fmt} source {options.source}: {len(problems)} problem(s); nothing was "
                           f"written:\n{shown}{more}\nfix them, or pass --skip-bad to leave the images with "
                           "problems out (they are counted and listed in import.json)")
    kept = [item for item in parsed.items if not item.problems]
    if not kept:
        raise DatasetError(f"{options.fmt} source {options.source}: no usable images"
                           + (f" (all {len(parsed.items)} had problems; first: {problems[0]})" if problems else ""))
    names = _names(parsed, kept, options.pass_class)
    renamed = _through_taxonomy(names, taxonomy, options.pass_class if parsed.task == "classify" else None)
    final_names = tuple(renamed.get(n, n) for n in names)
    splits = _assign_splits(kept, options.val_fraction, options.seed)
    notes = list(parsed.notes)
    if options.val_fraction > 0 and "val" not in splits:
        notes.append("val is empty: the source's own split has no val images (or there is only one image)")
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        counts, boxes = (_write_detect if parsed.task == "detect" else _write_classify)(
            staging, out, kept, names, final_names)
        summary = ImportSummary(out=out, task=parsed.task, names=final_names, renamed=renamed, images=counts,
                                boxes=boxes, skipped_images=len(parsed.items) - len(kept),
                                problems=tuple(problems), notes=tuple(notes))
        _write_manifest(staging / MANIFEST, options, summary)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _names(parsed: Parsed, kept: list[Item], pass_class: str) -> tuple[str, ...]:
    if parsed.task == "detect":
        names = parsed.names or tuple(sorted({b.label for item in kept for b in item.boxes}))
        if not names:
            raise DatasetError("the source has no boxes and names no classes; expected labelled defects")
        return names
    labels = sorted({item.label for item in kept if item.label is not None})
    for label in labels:
        if label in (".", "..") or "/" in label or "\\" in label:
            raise DatasetError(f"class {label!r}: not usable as a folder name; expected a name without / or \\")
    return tuple(([pass_class] if pass_class in labels else []) + [x for x in labels if x != pass_class])


def _through_taxonomy(names: tuple[str, ...], taxonomy: Taxonomy | None, pass_class: str | None) -> dict[str, str]:
    """Source name -> canonical label, for the names the taxonomy renames; DatasetError for an unknown name
    or two names that become one label."""
    if taxonomy is None:
        return {}
    renamed: dict[str, str] = {}
    owner: dict[str, str] = {}
    unknown = []
    for name in names:
        if name == pass_class:
            continue
        mapped = taxonomy.map(name)
        if mapped is None:
            unknown.append(name)
            continue
        if mapped.canonical in owner:
            raise DatasetError(f"classes {owner[mapped.canonical]!r} and {name!r} both map to {mapped.canonical!r} "
                               f"in the taxonomy {taxonomy.source}; a model class must be one canonical label: merge "
                               "the two classes in the source, or make them separate labels in the taxonomy")
        owner[mapped.canonical] = name
        if mapped.canonical != name:
            renamed[name] = mapped.canonical
    if unknown:
        raise DatasetError(f"class(es) {', '.join(repr(u) for u in unknown)} are not in the taxonomy "
                           f"{taxonomy.source} (no label or synonym matches); add them to it as labels or synonyms, "
                           "or import without --taxonomy")
    return renamed


def _assign_splits(items: list[Item], val_fraction: float, seed: int) -> set[Split]:
    """Give every item without a split of its own one: a seeded shuffle, ``val_fraction`` of them to val."""
    free = [i for i, item in enumerate(items) if item.split is None]
    random.Random(seed).shuffle(free)
    n_val = 0
    if free and val_fraction > 0 and len(free) >= 2:
        n_val = min(len(free) - 1, max(1, round(len(free) * val_fraction)))
    for k, i in enumerate(free):
        items[i].split = "val" if k < n_val else "train"
    return {item.split for item in items if item.split is not None}


def _unique(name: str, used: set[str]) -> str:
    """``name`` (a file name) with ``_2``, ``_3``... before its suffix when its stem is taken already."""
    path = pathlib.PurePath(name)
    stem, k = path.stem, 1
    while stem.casefold() in used:
        k += 1
        stem = f"{path.stem}_{k}"
    used.add(stem.casefold())
    return stem + path.suffix


def _write_detect(staging: pathlib.Path, final: pathlib.Path, items: list[Item], names: tuple[str, ...],
                  final_names: tuple[str, ...]) -> tuple[dict[str, int], int]:
    for sub in ("images", "labels"):
        for split in SPLITS:
            (staging / sub / split).mkdir(parents=True)
    index = {n: i for i, n in enumerate(names)}
    used: dict[str, set[str]] = {s: set() for s in SPLITS}
    counts: dict[str, int] = dict.fromkeys(SPLITS, 0)
    boxes = 0
    for item in items:
        split = item.split or "train"
        name = _unique(item.image.name, used[split])
        if item.decoded_size is None:
            raise DatasetError(f"{item.where}: its image was not checked")  # check_item always sets it
        w, h = item.decoded_size
        lines = [f"{index[b.label]} {(b.x1 + b.x2) / 2 / w:.6f} {(b.y1 + b.y2) / 2 / h:.6f} "
                 f"{(b.x2 - b.x1) / w:.6f} {(b.y2 - b.y1) / h:.6f}\n" for b in item.boxes]
        shutil.copyfile(item.image, staging / "images" / split / name)
        (staging / "labels" / split / pathlib.PurePath(name).with_suffix(".txt")).write_text("".join(lines))
        counts[split] += 1
        boxes += len(lines)
    (staging / "data.yaml").write_text(
        "# written by `edge-agent dataset import`\n" + yaml.safe_dump(
            {"path": str(final), "train": "images/train", "val": "images/val",
             "names": dict(enumerate(final_names))}, sort_keys=False, allow_unicode=True))
    return counts, boxes


def _write_classify(staging: pathlib.Path, _final: pathlib.Path, items: list[Item], names: tuple[str, ...],
                    final_names: tuple[str, ...]) -> tuple[dict[str, int], int]:
    folder = dict(zip(names, final_names, strict=True))
    for split in SPLITS:
        for name in final_names:
            (staging / split / name).mkdir(parents=True)
    used: dict[str, set[str]] = {s: set() for s in SPLITS}
    counts: dict[str, int] = dict.fromkeys(SPLITS, 0)
    for item in items:
        split = item.split or "train"
        if item.label is None:
            raise DatasetError(f"{item.where}: no label")  # an item without a label has a problem
        shutil.copyfile(item.image, staging / split / folder[item.label] / _unique(item.image.name, used[split]))
        counts[split] += 1
    (staging / "dataset.json").write_text(json.dumps({"task": "classify", "names": list(final_names)}, indent=1)
                                          + "\n")
    return counts, 0


def _write_manifest(path: pathlib.Path, options: ImportOptions, summary: ImportSummary) -> None:
    path.write_text(json.dumps({
        "schema": "edge-agent/import/1", "source": str(options.source), "format": options.fmt,
        "images_folder": None if options.images is None else str(options.images), "task": summary.task,
        "names": list(summary.names), "renamed_by_taxonomy": summary.renamed,
        "taxonomy": None if options.taxonomy is None else str(options.taxonomy),
        "val_fraction": options.val_fraction, "seed": options.seed, "images": summary.images, "boxes": summary.boxes,
        "skipped_images": summary.skipped_images, "problems": list(summary.problems), "notes": list(summary.notes),
    }, indent=1) + "\n")
