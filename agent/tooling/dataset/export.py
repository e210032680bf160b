"""``edge-agent dataset export``: a recording (:mod:`agent.dataset.recorder`) to a training dataset.

Formats (``OUT`` is written in a sibling folder and renamed into place at the end, so an interrupted export
leaves no half dataset under ``OUT``)::

    yolo         OUT/data.yaml, OUT/images/{train,val}/<id>.jpg, OUT/labels/{train,val}/<id>.txt
                 (``class cx cy w h`` normalised; an empty file for a background image)
    coco         OUT/images/{train,val}/<id>.jpg, OUT/annotations/instances_{train,val}.json
                 (COCO instances: bbox [x, y, w, h] in pixels, category ids = class id + 1)
    imagefolder  OUT/{train,val}/<class>/<id>.jpg (every class gets a folder), OUT/dataset.json
    all          OUT/review.csv (see below), OUT/export.json (what was exported, counts, skipped files)

Labels follow :mod:`agent.tooling.dataset.labels`; the split :mod:`agent.tooling.dataset.split`. Class names are the
recording model's; a recording made by models with different class lists is refused (the message lists
them) unless ``--model ID`` picks one list: the records of every model with that list are exported.

``review.csv`` has one row per frame where the VLM and the prefilter disagreed or that was left out:
record id, camera, sequence, capture time, split, the prefilter's classes, the VLM's verdict and classes,
what the detection export did (boxes, background, excluded), the imagefolder class, and notes.

Bad input: no records (DatasetError saying how to turn recording on); ``OUT`` not empty (refused; with
``overwrite`` only an earlier export, one with ``export.json``, is replaced); a record that does not parse,
or whose JPEG is missing or unreadable, is skipped, counted and listed in ``export.json``.
"""

from __future__ import annotations

import abc
import csv
import dataclasses
import datetime
import json
import os
import pathlib
import shutil
from collections.abc import Callable, Sequence
from typing import Any, Literal

from agent.csvsafe import safe_row
from agent.dataset.record import DatasetRecord, RecordError, check_class_name
from agent.dataset.store import RECORDS
from agent.errors import DatasetError
from agent.tooling.dataset.labels import FrameLabel, label_frame
from agent.tooling.dataset.split import Split, TimedItem, assign_splits, time_groups
from agent.tooling.evaluation.dataset import image_size

__all__ = ["FORMATS", "ExportOptions", "ExportSummary", "export_dataset", "read_recording"]

Format = Literal["yolo", "coco", "imagefolder"]
FORMATS: tuple[str, ...] = ("yolo", "coco", "imagefolder")
SPLITS: tuple[Split, ...] = ("train", "val")
MANIFEST = "export.json"
REVIEW = "review.csv"
REVIEW_COLUMNS = ("record", "camera", "sequence", "captured_at", "split", "kind", "prefilter", "vlm_verdict",
                  "vlm_classes", "detection", "image_class", "notes")
ENABLE_HINT = ("enable dataset recording in the agent's config: `dataset: {dir: DIR}` and `record: true` on the "
               "cameras to record (escalation.gateway must be set), then let the agent run")
ProgressFn = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    source: pathlib.Path
    out: pathlib.Path
    fmt: str
    val_fraction: float = 0.2
    split_gap_s: float = 2.0
    split_block_s: float = 30.0  # a time group lasting this long ends (an unbroken recording still gets a val set)
    seed: int = 0
    overwrite: bool = False
    model: str | None = None  # a model id: export the records of the models with its class list
    min_score: float = 0.0
    pass_class: str = "pass"


@dataclasses.dataclass(frozen=True)
class Recording:
    records: tuple[tuple[DatasetRecord, pathlib.Path], ...]  # the record and its JPEG
    skipped: tuple[tuple[str, str], ...]  # (file, why)


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    out: pathlib.Path
    fmt: str
    names: tuple[str, ...]  # the exported class names, index = class id
    images: dict[str, int]  # written, by split
    boxes: int
    background: int
    excluded: int  # frames left out
    review_rows: int
    groups: int
    skipped: tuple[tuple[str, str], ...]
    other_models: int  # records left out by --model
    warnings: tuple[str, ...]


def read_recording(source: pathlib.Path) -> Recording:
    """Every record under ``source`` (``DIR`` or ``DIR/records``), in capture order; unreadable ones skipped
    with their reason. DatasetError when there is no record file at all."""
    folder = source / RECORDS if (source / RECORDS).is_dir() else source
    if not folder.is_dir():
        raise DatasetError(f"no recorded frames in {source}: not a folder; {ENABLE_HINT}")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".json" and p.is_file())
    if not files:
        raise DatasetError(f"no recorded frames in {source}; {ENABLE_HINT}")
    records: list[tuple[DatasetRecord, pathlib.Path]] = []
    skipped: list[tuple[str, str]] = []
    for path in files:
        try:
            record = DatasetRecord.from_dict(json.loads(path.read_bytes()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            skipped.append((path.name, f"not readable JSON: {exc}"))
            continue
        except RecordError as exc:
            skipped.append((path.name, f"not a dataset record: {exc}"))
            continue
        image = folder / record.image
        try:
            size = image_size(image)
        except DatasetError as exc:
            skipped.append((path.name, f"its image: {exc}"))
            continue
        if size != (record.width, record.height):
            skipped.append((path.name, f"its image is {size[0]}x{size[1]}, the record says "
                                       f"{record.width}x{record.height}"))
            continue
        records.append((record, image))
    records.sort(key=lambda r: (r[0].captured_at, r[0].id))
    return Recording(tuple(records), tuple(skipped))


def select_model(records: Sequence[tuple[DatasetRecord, pathlib.Path]], model: str | None,
                 source: pathlib.Path) -> tuple[list[tuple[DatasetRecord, pathlib.Path]], tuple[str, tuple[str, ...]]]:
    """The records to export and their (task, class names). DatasetError when models with different class
    lists recorded and ``model`` does not pick one."""
    lists: dict[tuple[str, tuple[str, ...]], dict[str, int]] = {}
    for record, _image in records:
        lists.setdefault((record.task, record.names), {}).setdefault(record.model_id, 0)
        lists[(record.task, record.names)][record.model_id] += 1
    if model is not None:
        chosen = [key for key, ids in lists.items() if model in ids]
        if not chosen:
            known = sorted({m for ids in lists.values() for m in ids})
            raise DatasetError(f"--model {model}: no frame of {source} was recorded with it; the recording's "
                               f"models: {', '.join(known)}")
        key = chosen[0]
    elif len(lists) > 1:
        lines = [f"  - {', '.join(f'{m} ({n} frames)' for m, n in sorted(ids.items()))}: {task}, classes "
                 f"{', '.join(names)}" for (task, names), ids in lists.items()]
        raise DatasetError(f"{source} was recorded by models with different classes; their labels do not mix. "
                           "Export one class list at a time with --model ID:\n" + "\n".join(lines))
    else:
        key = next(iter(lists))
    return [r for r in records if (r[0].task, r[0].names) == key], key


def _split(options: ExportOptions, items: list[TimedItem]) -> tuple[list[list[int]], dict[int, Split], list[str]]:
    """The time groups, every frame's split, and a warning when val came out empty."""
    groups = time_groups(items, options.split_gap_s, options.split_block_s)
    splits = assign_splits(groups, options.val_fraction, options.seed)
    warnings: list[str] = []
    if options.val_fraction > 0 and "val" not in splits.values():
        warnings.append(f"val is empty: the {len(items)} frames form {len(groups)} run(s) with no gap of "
                        f"--split-gap {options.split_gap_s:g} s or more between them, nor --split-block "
                        f"{options.split_block_s:g} s long, that could go to val; lower --split-gap or "
                        "--split-block (or record longer)")
    return groups, splits, warnings


def export_dataset(options: ExportOptions, progress: ProgressFn | None = None) -> ExportSummary:
    """Run the export (see the module doc). DatasetError for bad input, before anything is written."""
    _check_options(options)
    out = options.out.resolve()
    _check_out(out, options.overwrite)
    recording = read_recording(options.source)
    if not recording.records:
        raise DatasetError(f"no readable recorded frames in {options.source}: all {len(recording.skipped)} record "
                           f"file(s) are broken (first: {recording.skipped[0][0]}: {recording.skipped[0][1]})")
    records, (task, model_names) = select_model(recording.records, options.model, options.source)
    names = _export_classes(options, task, model_names)

    labels = [label_frame(r, pass_class=options.pass_class, min_score=options.min_score) for r, _ in records]
    groups, splits, warnings = _split(options, [TimedItem(r.camera, r.captured_at.timestamp()) for r, _ in records])

    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        writer = _WRITERS[options.fmt](staging, out, names)
        counts: dict[str, int] = {s: 0 for s in SPLITS}
        boxes = background = excluded = 0
        skipped = list(recording.skipped)
        for done, ((record, image), label) in enumerate(zip(records, labels, strict=True), start=1):
            split = splits[done - 1]
            try:
                added = writer.add(record, image, label, split)
            except FileNotFoundError:  # the running agent evicted it since it was read
                skipped.append((f"{record.id}.json", "its image went away during the export (evicted by the "
                                                      "running agent to stay within its bounds)"))
            else:
                if added:
                    counts[split] += 1
                    boxes += len(label.boxes) if options.fmt != "imagefolder" else 0
                    background += options.fmt != "imagefolder" and label.box_action == "background"
                else:
                    excluded += 1
            if progress is not None:
                progress(done, len(records))
        writer.finish()
        rows = _write_review(staging / REVIEW, records, labels, splits)
        summary = ExportSummary(
            out=out, fmt=options.fmt, names=names, images=counts, boxes=boxes, background=background,
            excluded=excluded, review_rows=rows, groups=len(groups), skipped=tuple(skipped),
            other_models=len(recording.records) - len(records), warnings=tuple(warnings))
        _write_manifest(staging / MANIFEST, options, summary, records)
        if out.exists():
            shutil.rmtree(out) if any(out.iterdir()) else out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _check_options(options: ExportOptions) -> None:
    if options.fmt not in FORMATS:
        raise DatasetError(f"--format {options.fmt!r}: expected one of {', '.join(FORMATS)}")
    if not 0.0 <= options.val_fraction < 1.0:
        raise DatasetError(f"--val-fraction {options.val_fraction}: expected 0 <= fraction < 1")
    if options.split_gap_s < 0:
        raise DatasetError(f"--split-gap {options.split_gap_s}: expected 0 or more seconds")
    if options.split_block_s < 0:
        raise DatasetError(f"--split-block {options.split_block_s}: expected 0 (no blocks) or more seconds")


def _export_classes(options: ExportOptions, task: str, model_names: tuple[str, ...]) -> tuple[str, ...]:
    """The exported class names: the model's (boxes), or for imagefolder the pass class and the defect classes,
    each of which must be a folder name. DatasetError for a classifier's frames outside imagefolder."""
    if task != "detect" and options.fmt != "imagefolder":
        raise DatasetError(f"the recording's model is a {task} model: its frames have no boxes; "
                           "export them with --format imagefolder")
    if options.fmt != "imagefolder":
        return model_names
    names = _image_classes(task, model_names, options.pass_class)
    try:  # each class becomes a folder under OUT/<split>/
        for name in names:
            check_class_name(name, "--pass-class" if name == options.pass_class else "the model's class")
    except RecordError as exc:
        raise DatasetError(f"--format imagefolder: {exc}; export as yolo or coco, or rename the class") from exc
    return names


def _check_out(out: pathlib.Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(f"--out {out}: the folder exists and is not empty; choose a new folder, or pass "
                               "--overwrite to replace an earlier export")
        if not (out / MANIFEST).is_file():
            raise DatasetError(f"--out {out}: not empty and not an earlier export (no {MANIFEST}); --overwrite only "
                               "replaces what `edge-agent dataset export` wrote: choose another folder")


def _image_classes(task: str, names: tuple[str, ...], pass_class: str) -> tuple[str, ...]:
    if task == "detect":
        if pass_class in names:
            raise DatasetError(f"--pass-class {pass_class!r} is a defect class of the detector; choose another name")
        return (pass_class, *names)
    if pass_class not in names:
        raise DatasetError(f"--pass-class {pass_class!r}: the recording's classifier has no such class "
                           f"({', '.join(names)}); pass the class that means a good frame")
    return names


class _Writer(abc.ABC):
    """One output format: ``add`` puts one frame in (False: left out), ``finish`` writes what goes beside."""

    def __init__(self, staging: pathlib.Path, final: pathlib.Path, names: tuple[str, ...]) -> None:
        self.staging = staging
        self.final = final
        self.names = names

    @abc.abstractmethod
    def add(self, record: DatasetRecord, image: pathlib.Path, label: FrameLabel, split: Split) -> bool:
        """Write the frame and its labels into ``split``; False when the format leaves it out."""

    @abc.abstractmethod
    def finish(self) -> None:
        """Write what goes beside the images."""


class _YoloWriter(_Writer):
    def __init__(self, staging: pathlib.Path, final: pathlib.Path, names: tuple[str, ...]) -> None:
        super().__init__(staging, final, names)
        for sub in ("images", "labels"):
            for split in SPLITS:
                (staging / sub / split).mkdir(parents=True)

    def add(self, record: DatasetRecord, image: pathlib.Path, label: FrameLabel, split: Split) -> bool:
        if label.box_action == "excluded":
            return False
        lines = []
        for b in label.boxes:
            box = _clip(b.box, record.width, record.height)
            if box is None:
                continue
            x1, y1, x2, y2 = box
            lines.append(f"{b.class_id} {(x1 + x2) / 2 / record.width:.6f} {(y1 + y2) / 2 / record.height:.6f} "
                         f"{(x2 - x1) / record.width:.6f} {(y2 - y1) / record.height:.6f}\n")
        shutil.copyfile(image, self.staging / "images" / split / record.image)
        (self.staging / "labels" / split / f"{record.id}.txt").write_text("".join(lines))
        return True

    def finish(self) -> None:
        # every string quoted (a JSON string is a YAML double-quoted scalar): a class name such as
        # `no: defect` or `{x}` stays one name, and a newline in it cannot add keys
        names = "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(self.names))
        (self.staging / "data.yaml").write_text(
            "# written by `edge-agent dataset export` from a recording of the agent\n"
            f"path: {json.dumps(str(self.final))}\ntrain: images/train\nval: images/val\nnames:\n{names}")


class _CocoWriter(_Writer):
    def __init__(self, staging: pathlib.Path, final: pathlib.Path, names: tuple[str, ...]) -> None:
        super().__init__(staging, final, names)
        for split in SPLITS:
            (staging / "images" / split).mkdir(parents=True)
        (staging / "annotations").mkdir()
        self.docs: dict[str, dict[str, Any]] = {s: {"images": [], "annotations": []} for s in SPLITS}
        self.next_annotation = 1

    def add(self, record: DatasetRecord, image: pathlib.Path, label: FrameLabel, split: Split) -> bool:
        if label.box_action == "excluded":
            return False
        doc = self.docs[split]
        image_id = len(doc["images"]) + 1
        doc["images"].append({"id": image_id, "file_name": f"{split}/{record.image}", "width": record.width,
                              "height": record.height, "date_captured": record.captured_at.isoformat()})
        for b in label.boxes:
            box = _clip(b.box, record.width, record.height)
            if box is None:
                continue
            x1, y1, x2, y2 = box
            w, h = x2 - x1, y2 - y1
            doc["annotations"].append({"id": self.next_annotation, "image_id": image_id, "category_id": b.class_id + 1,
                                       "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)],
                                       "area": round(w * h, 2), "iscrowd": 0, "segmentation": []})
            self.next_annotation += 1
        shutil.copyfile(image, self.staging / "images" / split / record.image)
        return True

    def finish(self) -> None:
        categories = [{"id": i + 1, "name": n, "supercategory": "defect"} for i, n in enumerate(self.names)]
        info = {"description": "edge-agent dataset export", "version": "1.0",
                "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat()}
        for split, doc in self.docs.items():
            (self.staging / "annotations" / f"instances_{split}.json").write_text(json.dumps(
                {"info": info, "licenses": [], "images": doc["images"], "annotations": doc["annotations"],
                 "categories": categories}))


class _ImageFolderWriter(_Writer):
    def __init__(self, staging: pathlib.Path, final: pathlib.Path, names: tuple[str, ...]) -> None:
        super().__init__(staging, final, names)
        for split in SPLITS:
            for name in names:
                (staging / split / name).mkdir(parents=True)

    def add(self, record: DatasetRecord, image: pathlib.Path, label: FrameLabel, split: Split) -> bool:
        if label.image_class is None or label.image_class not in self.names:
            return False
        shutil.copyfile(image, self.staging / split / label.image_class / record.image)
        return True

    def finish(self) -> None:
        (self.staging / "dataset.json").write_text(json.dumps({"task": "classify", "names": list(self.names)},
                                                              indent=1))


_WRITERS: dict[str, type[_Writer]] = {"yolo": _YoloWriter, "coco": _CocoWriter, "imagefolder": _ImageFolderWriter}


def _clip(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, float, float, float] | None:
    """The box inside the frame; None when less than a pixel of it is left."""
    x1, y1 = min(max(box[0], 0.0), width), min(max(box[1], 0.0), height)
    x2, y2 = min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)
    return (x1, y1, x2, y2) if x2 - x1 >= 1.0 and y2 - y1 >= 1.0 else None


def _write_review(path: pathlib.Path, records: Sequence[tuple[DatasetRecord, pathlib.Path]],
                  labels: Sequence[FrameLabel], splits: dict[int, Split]) -> int:
    rows = 0
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(REVIEW_COLUMNS)
        for i, ((record, _image), label) in enumerate(zip(records, labels, strict=True)):
            if not (label.disagrees or label.box_action == "excluded" and record.task == "detect"
                    or label.image_class is None):
                continue
            prefilter = ", ".join(f"{t.label} {t.confidence:.2f}" for t in record.tags) or "-"
            writer.writerow(safe_row([  # class names and labels come from models: no cell a spreadsheet runs
                record.id, record.camera, str(record.sequence), record.captured_at.isoformat(), splits[i],
                record.kind, prefilter, record.vlm.verdict if record.vlm else "-",
                ", ".join(label.vlm_classes) or "-", label.box_action, label.image_class or "left out",
                "; ".join(label.notes)]))
            rows += 1
    return rows


def _write_manifest(path: pathlib.Path, options: ExportOptions, summary: ExportSummary,
                    records: Sequence[tuple[DatasetRecord, pathlib.Path]]) -> None:
    models = sorted({r.model_id for r, _ in records})
    path.write_text(json.dumps({
        "tool": "edge-agent dataset export", "source": str(options.source.resolve()), "format": options.fmt,
        "names": list(summary.names), "models": models, "images": summary.images, "boxes": summary.boxes,
        "background": summary.background, "excluded": summary.excluded, "review_rows": summary.review_rows,
        "split": {"val_fraction": options.val_fraction, "gap_s": options.split_gap_s,
                  "block_s": options.split_block_s, "seed": options.seed, "groups": summary.groups},
        "min_score": options.min_score, "pass_class": options.pass_class,
        "skipped": [{"file": f, "why": why} for f, why in summary.skipped],
        "other_models": summary.other_models, "warnings": list(summary.warnings)}, indent=1))
