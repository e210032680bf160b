"""``edge-agent dataset export``: a recording of the agent (``dataset:`` in its config) to a training dataset;
``edge-agent dataset import``: a labelled dataset from COCO, Pascal VOC, YOLO or a CSV into the same layouts.

The work is :mod:`agent.tooling.dataset.export`'s and :mod:`agent.tooling.dataset.imports.run`'s; this
module is the command line: options, a progress bar on stderr (the one ``edge-agent tag`` draws), the
summary; bad input reaches the error boundary (:mod:`agent.cli.boundary`: a message, exit code 2).
"""

from __future__ import annotations

import pathlib
import sys
import time
from typing import Annotated, TextIO

import typer

__all__ = ["export_command", "import_command", "summary_lines"]


class _ProgressBar:
    """``export: 12/40 items [#####-----] 30%, 81.0 items/s, ETA 0:03`` on stderr: redrawn in place on a
    terminal, a plain line every 10 % otherwise."""

    BAR = 24

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._start = time.monotonic()
        self._last = -1.0
        self._step = 0

    def __call__(self, done: int, total: int) -> None:
        from agent.tooling.batch.tag import progress_text

        now = time.monotonic()
        final = done >= total
        if self._tty:
            if not final and now - self._last < 0.2:
                return
        else:
            step = int(10 * done / max(total, 1))
            if not final and step == self._step:
                return
            self._step = step
        self._last = now
        text = "export: " + progress_text(done, total, done, now - self._start,
                                          bar=self.BAR if self._tty else 0).removeprefix("tag: ")
        self._stream.write(("\r" + text + ("\n" if final else "")) if self._tty else text + "\n")
        self._stream.flush()


def summary_lines(summary: object) -> list[str]:
    """What the export did, for the terminal."""
    from agent.tooling.dataset.export import ExportSummary

    if not isinstance(summary, ExportSummary):
        raise TypeError(f"expected an ExportSummary, got {type(summary).__name__}")
    lines = [f"{summary.fmt} dataset in {summary.out}: train {summary.images['train']}, val {summary.images['val']} "
             f"images ({summary.groups} time group(s)); classes: {', '.join(summary.names)}"]
    if summary.fmt != "imagefolder":
        lines.append(f"{summary.boxes} boxes, {summary.background} background images")
    lines.append(f"{summary.excluded} frame(s) left out; {summary.review_rows} row(s) to review in "
                 f"{summary.out / 'review.csv'}")
    if summary.other_models:
        lines.append(f"{summary.other_models} frame(s) of models with other classes not exported (--model)")
    if summary.skipped:
        lines.append(f"{len(summary.skipped)} broken record(s) skipped (listed in export.json), e.g. "
                     f"{summary.skipped[0][0]}: {summary.skipped[0][1]}")
    lines += [f"warning: {w}" for w in summary.warnings]
    return lines


def export_command(
    source: Annotated[pathlib.Path, typer.Option(
        "--from", help="the recording: the agent's dataset.dir")],
    out: Annotated[pathlib.Path, typer.Option("--out", help="new folder for the dataset")],
    fmt: Annotated[str, typer.Option("--format", help="yolo, coco or imagefolder")] = "yolo",
    val_fraction: Annotated[float, typer.Option(help="share of the frames for val (whole time groups)")] = 0.2,
    split_gap: Annotated[float, typer.Option(
        "--split-gap", help="seconds between two frames of a camera that start a new time group; frames closer "
        "than this are in the same split (but for block boundaries)")] = 2.0,
    split_block: Annotated[float, typer.Option(
        "--split-block", help="seconds after which a time group ends even without a gap, so an unbroken recording "
        "is cut into blocks that can go to val (0: never)")] = 30.0,
    seed: Annotated[int, typer.Option(help="seed of the order in which time groups are drawn for val")] = 0,
    model: Annotated[str | None, typer.Option(
        help="a model id of the recording: export the frames of the models with its class list (needed when "
        "models with different classes recorded)")] = None,
    min_score: Annotated[float, typer.Option(
        help="ignore recorded detections below this confidence (default: all the prefilter returned)")] = 0.0,
    pass_class: Annotated[str, typer.Option(help="imagefolder: the class of frames without a defect")] = "pass",
    overwrite: Annotated[bool, typer.Option(help="replace an earlier export in --out")] = False,
) -> None:
    """Export the frames the agent recorded (VLM-labelled escalations and confident samples) as a training
    dataset, split by time into train/val, with review.csv listing where the VLM and the prefilter disagreed."""
    from agent.tooling.dataset.export import ExportOptions, export_dataset

    summary = export_dataset(ExportOptions(
        source=source, out=out, fmt=fmt, val_fraction=val_fraction, split_gap_s=split_gap,
        split_block_s=split_block, seed=seed, overwrite=overwrite, model=model, min_score=min_score,
        pass_class=pass_class),
        progress=_ProgressBar(sys.stderr))
    for line in summary_lines(summary):
        typer.echo(line)


def import_command(
    source: Annotated[pathlib.Path, typer.Argument(
        help="coco: a .json file or a folder with annotations/*.json; voc: a folder with Annotations/ (or .xml "
             "files); yolo: a data.yaml or a folder with one (or with classes.txt); csv: a .csv file")],
    fmt: Annotated[str, typer.Option("--format", help="coco, voc, yolo (detection) or csv (image-level labels)")],
    out: Annotated[pathlib.Path, typer.Option("--out", help="new folder for the dataset")],
    images: Annotated[pathlib.Path | None, typer.Option(
        help="the folder the source's image names are relative to (default: coco: images/ beside annotations/, "
             "else the JSON's folder; voc: JPEGImages/, else the XML folder; csv: the CSV's folder)")] = None,
    taxonomy: Annotated[pathlib.Path | None, typer.Option(
        help="the plant's taxonomy file: every class must be one of its labels or synonyms, and becomes "
             "that canonical label")] = None,
    val_fraction: Annotated[float, typer.Option(
        help="share of the images for val, when the source has no train/val split of its own")] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of the train/val draw")] = 0,
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="leave out images with a problem (missing or broken file, bad box, unknown class, "
                           "broken XML, bad CSV line), count them and list them in import.json; without it "
                           "any problem stops the import and nothing is written")] = False,
    pass_class: Annotated[str, typer.Option(
        help="csv: the class of good images (not a defect, so not looked up in the taxonomy)")] = "pass",
) -> None:
    """Import a labelled dataset (COCO JSON, Pascal VOC XML, YOLO folders, a CSV of image-level labels) into
    the layout `models train`, `models eval` and `models quantize --val` read; every bad item is named."""
    from agent.tooling.dataset.imports.run import ImportOptions, import_dataset

    summary = import_dataset(ImportOptions(
        source=source, out=out, fmt=fmt, images=images, taxonomy=taxonomy, val_fraction=val_fraction,
        seed=seed, skip_bad=skip_bad, pass_class=pass_class))
    kind = "detection (YOLO layout)" if summary.task == "detect" else "classification (image folders)"
    typer.echo(f"{kind} dataset in {summary.out}: train {summary.images['train']}, val {summary.images['val']} "
               f"images; classes: {', '.join(summary.names)}")
    if summary.task == "detect":
        typer.echo(f"boxes: {summary.boxes}")
    if summary.renamed:
        typer.echo("renamed by the taxonomy: " + ", ".join(f"{a} -> {b}" for a, b in summary.renamed.items()))
    if summary.skipped_images or summary.problems:
        typer.echo(f"{summary.skipped_images} image(s) skipped, {len(summary.problems)} problem(s) (listed in "
                   f"{summary.out / 'import.json'}), e.g. {summary.problems[0]}")
    for note in summary.notes:
        typer.echo(f"note: {note}")
