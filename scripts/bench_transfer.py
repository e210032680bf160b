#!/usr/bin/env python3
"""Does a new head on the shipped detector's backbone beat training from scratch? Side by side in one run,
on the same data, with the same ``--time`` budget, measured on the same held-out images.

    python scripts/bench_transfer.py [--time 0.33] [--train 400] [--val 60] [--test 200] [--data DIR]

(needs the train extra: ``pip install -e '.[train]'``)

a. transfer: ``edge-agent models train --new-classes --base models/conveyor-yolov8n.onnx`` (the conveyor
   detector's backbone, a new head for the dataset's classes);
b. scratch:  ``edge-agent models train --base yolov8n.yaml`` (ultralytics' YOLOv8n, random weights).

Both go through ``agent.tooling.training.candidate.run_training`` (what ``models train`` runs), one after the other
(two trainings at once would share the cores and each measure the other's load), with the same data, image
size (the dataset's unless ``--imgsz``), batch, seed, optimizer (AdamW, lr0 1e-3: what ultralytics'
``optimizer=auto`` picks for 6 classes and under 10,000 iterations; biases start at lr0, not ultralytics'
0.1) and augmentation (ultralytics' defaults, mosaic off for the last 10 epochs). They differ in the
schedule (``agent.tooling.training.detector.schedule``): b. is ultralytics' own for a model yaml (every layer
trained, 3 warm-up epochs, one optimiser step per 64 images); a. is ours for a new head on a trained
backbone (the backbone frozen, no warm-up, one step per batch). Printed: each side's settings, the epochs
it finished within the budget, its training time, and mAP50 on a held-out set that neither saw (the
agent's own runtime, FP32), then the difference a - b (the goal: at least 0.10) and the ratio a / b.
The load average before and after each side is printed: the box's other work slows both alike only
when it is steady.

Data: the synthetic grey surface (``dataset synth --scene surface``: 640x640, six small defect types) as
labelled data arrives from a plant: train and val rendered with ``--seed`` as a COCO export, the held-out
set with another seed as a Pascal VOC export, each turned by ``dataset import`` into the YOLO layout the
trainer reads; or ``--data DIR`` (a YOLO dataset, e.g. from ``edge-agent dataset import``) with
``--test-data DIR`` (its val split is the held-out set).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.errors import EdgeAgentError  # noqa: E402
from agent.tooling.training.candidate import TrainOptions, run_training, score_on_val  # noqa: E402
from agent.tooling.training.data import check_training_data  # noqa: E402
from agent.tooling.training.progress import EpochRow  # noqa: E402

DETECTOR = REPO / "models" / "conveyor-yolov8n.onnx"
SIDES = (("a. transfer (new head on conveyor-yolov8n)", DETECTOR, True),
         ("b. scratch (yolov8n.yaml)", pathlib.Path("yolov8n.yaml"), False))


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (1 min) {five:.1f} (5 min) on {os.cpu_count()} cores"


def _render_and_import(work: pathlib.Path, name: str, fmt: str, n_train: int, n_val: int, seed: int) -> pathlib.Path:
    """The surface scene rendered as a ``fmt`` export (COCO or VOC), then ``dataset import``-ed into the YOLO
    layout the trainer reads, as a plant's own labelled data would be."""
    from agent.tooling.dataset.imports.run import ImportOptions, import_dataset
    from agent.tooling.dataset.synth import write_synthetic_dataset

    export, imported = work / f"{name}-{fmt}", work / name
    write_synthetic_dataset(export, n_train, n_val, seed=seed, scene="surface", fmt=fmt)
    summary = import_dataset(ImportOptions(source=export, out=imported, fmt=fmt))
    print(f"  {fmt} export {export.name} imported: train {summary.images['train']}, val {summary.images['val']} "
          f"images, {summary.boxes} boxes, classes {', '.join(summary.names)}", flush=True)
    shutil.rmtree(export)  # the imported copy is what training reads
    return imported


def _ap(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


def _datasets(args: argparse.Namespace, work: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    if args.data is not None:
        if args.test_data is None:
            raise EdgeAgentError("--data needs --test-data: a held-out YOLO dataset (its val split) neither side sees")
        return args.data, args.test_data
    data, test = work / "surface", work / "surface-heldout"
    if (data / "data.yaml").is_file() and (test / "data.yaml").is_file():
        print(f"reusing the surface datasets in {work}", flush=True)  # --work of an earlier run: the same images
        return data, test
    t0 = time.monotonic()
    _render_and_import(work, data.name, "coco", args.train, args.val, args.seed)
    _render_and_import(work, test.name, "voc", 1, args.test, args.seed + 1000)
    print(f"rendered the surface scene: {args.train} train / {args.val} val (seed {args.seed}, via COCO), "
          f"{args.test} held-out (seed {args.seed + 1001}, via VOC) in {time.monotonic() - t0:.0f} s", flush=True)
    return data, test


def _side(label: str, base: pathlib.Path, new_classes: bool, data: pathlib.Path, test: pathlib.Path,
          args: argparse.Namespace, work: pathlib.Path) -> dict[str, Any]:
    out = work / label.split(".")[0]
    if out.exists():
        shutil.rmtree(out)  # an earlier run's candidate for this side (--work)
    imgsz = (args.imgsz,) if args.imgsz else None
    opts = TrainOptions(data=data, base=base, out=out, epochs=args.epochs, imgsz=imgsz, lr0=args.lr0,
                        batch=args.batch, threads=args.threads, seed=args.seed, quantize=False, overwrite=False,
                        verbose=False, command=f"scripts/bench_transfer.py ({label})", new_classes=new_classes,
                        time_h=args.time)
    def epoch(row: EpochRow) -> None:
        print(f"  {label[:2]} {row.line()}", flush=True)

    print(f"\n{label}: {_load()}", flush=True)
    started = time.monotonic()
    run_training(opts, lambda m: print(f"  {label[:2]} {m}", flush=True), epoch)
    wall = time.monotonic() - started
    record = json.loads((out / "candidate.json").read_text())
    score = score_on_val(out / record["files"]["fp32"], check_training_data(test), args.threads)
    print(f"  {label[:2]} done in {wall / 60:.1f} min: {_load()}; settings {json.dumps(record['settings'])}",
          flush=True)
    per_class = ", ".join(f"{name} {_ap(row.get('score'))} ({row.get('support')})"
                          for name, row in score.per_class.items())
    print(f"  {label[:2]} held-out AP50 per class (boxes): {per_class}", flush=True)
    return {"label": label, "epochs": len(record["history"]), "train_s": float(record["train_seconds"]),
            "map50": score.value, "imgsz": record["settings"]["imgsz"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time", type=float, default=0.33, help="training budget per side, hours (0.33 = 20 min)")
    parser.add_argument("--train", type=int, default=400, help="surface training images")
    parser.add_argument("--val", type=int, default=60, help="surface val images (best-epoch choice)")
    parser.add_argument("--test", type=int, default=200, help="held-out surface images (the score)")
    parser.add_argument("--data", type=pathlib.Path, help="a YOLO dataset instead of the surface scene")
    parser.add_argument("--test-data", type=pathlib.Path, help="with --data: the held-out YOLO dataset (val split)")
    parser.add_argument("--imgsz", type=int, help="training input side (default: the dataset's image size)")
    parser.add_argument("--epochs", type=int, default=300, help="upper bound; --time decides")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr0", type=float, help="AdamW learning rate (default: 1e-3, models train's for new heads)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--side", choices=("both", "a", "b"), default="both",
                        help="run one side only (with --work: the same datasets as an earlier run)")
    parser.add_argument("--work", type=pathlib.Path, help="keep the datasets and candidates here (default: a "
                                                          "temporary folder, removed)")
    args = parser.parse_args()
    if args.time is None or not args.time > 0:
        parser.error(f"--time {args.time}: expected hours above 0")
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        work = args.work or pathlib.Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            data, test = _datasets(args, work)
            results = [_side(label, base, new, data, test, args, work) for label, base, new in SIDES
                       if args.side in ("both", label[0])]
        except EdgeAgentError as exc:
            print(f"bench_transfer: error: {exc}", file=sys.stderr)
            return 2
    print(f"\nsame data, same budget ({args.time:g} h = {args.time * 60:.0f} min per side), held-out mAP50 "
          f"(agent runtime, FP32, {args.test if args.data is None else 'the --test-data val'} images):")
    print(f"{'side':<46} {'imgsz':>6} {'epochs':>7} {'train':>8} {'mAP50':>7}")
    for r in results:
        print(f"{r['label']:<46} {r['imgsz']:>6} {r['epochs']:>7} {r['train_s'] / 60:>7.1f}m {r['map50']:>7.3f}")
    if len(results) < 2:
        return 0
    a, b = results[0]["map50"], results[1]["map50"]
    print(f"a - b = {a - b:+.3f} mAP50 (goal: +0.10 or more: {'met' if a - b >= 0.10 else 'NOT met'}); "
          f"a / b = {a / b:.2f}" if b > 0 else f"a - b = {a - b:+.3f} mAP50; b scored 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
