#!/usr/bin/env python3
"""Train the shipped conveyor defect detector (YOLOv8n) offline and export it to ONNX.

Reproducible: the dataset is rendered from a seed, training uses the same seed,
and every setting plus the validation metrics go into the model card
``models/<name>.md``. Needs the ``train`` extra (torch, ultralytics)::

    pip install -e '.[train]'
    python scripts/train_detector.py --train 600 --val 150 --epochs 30

The default architecture is YOLOv8n with ReLU activations instead of SiLU: on
CPUs, ReLU fuses into quantized convolutions and INT8 runs about 2x faster than
FP32 (see shared perf notes), while SiLU's Sigmoid*Mul leaves dequantize pairs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Offline before ultralytics is imported: no DNS probes, no hub, no downloads.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(REPO / "runs" / "yolo-config"))

from agent.tooling.training.card import detector_class_table, read_earlier_training  # noqa: E402
from agent.tooling.training.yolo_arch import model_yaml  # noqa: E402  (the YOLOv8 yaml, shared with models train)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="conveyor-yolov8n")
    ap.add_argument("--train", type=int, default=600, help="training images")
    ap.add_argument("--val", type=int, default=150, help="held-out validation images")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--activation", choices=["relu", "silu"], default="relu")
    ap.add_argument("--workdir", type=pathlib.Path, default=REPO / "runs" / "train-detector")
    ap.add_argument("--models", type=pathlib.Path, default=REPO / "models")
    ap.add_argument("--init", type=pathlib.Path, default=None,
                    help="start from these weights (a best.pt of an earlier run) instead of random init; "
                         "the earlier run's record.json is kept in the model card as stage 1")
    ap.add_argument("--init-onnx", type=pathlib.Path, default=None,
                    help="start from an exported ONNX detector of the same architecture (e.g. the shipped "
                         "models/conveyor-yolov8n.onnx), its BatchNorms re-created from training images; "
                         "the card next to it is kept as the earlier stages")
    ap.add_argument("--lr0", type=float, default=None, help="initial learning rate (default: ultralytics' auto)")
    ap.add_argument("--close-mosaic", type=int, default=10, help="last epochs trained without mosaic augmentation")
    ap.add_argument("--finish-only", action="store_true",
                    help="skip dataset and training: validate, export and write the card from WORKDIR/run "
                         "(for a run whose training ended but whose export did not)")
    return ap


def main() -> int:
    args = _parser().parse_args()

    from agent.capture.synthetic import DEFECT_CLASSES
    from agent.tooling.dataset.synth import write_synthetic_dataset

    # absolute: ultralytics puts a relative `project` under runs/detect/
    work = args.workdir.resolve()
    data_dir = work / "dataset"
    if args.finish_only:
        return finish(args, work, data_dir / "data.yaml", train_s=None)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)

    def progress(split: str, done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"dataset {split}: {done}/{total}", flush=True)

    data_yaml = write_synthetic_dataset(data_dir, args.train, args.val, seed=args.seed, progress=progress)

    from ultralytics import YOLO  # the train extra

    if args.init is not None and args.init_onnx is not None:
        raise SystemExit("give --init or --init-onnx, not both")
    if args.init is not None:
        init_copy = work / "init.pt"
        shutil.copyfile(args.init.resolve(), init_copy)
        model = YOLO(str(init_copy), task="detect")
    elif args.init_onnx is not None:
        model = YOLO(str(init_from_onnx(args, work, data_dir)), task="detect")
    else:
        yaml_path = work / f"yolov8n-{args.activation}.yaml"
        yaml_path.write_text(model_yaml(len(DEFECT_CLASSES), args.activation))
        model = YOLO(str(yaml_path), task="detect")
    extra = {"lr0": args.lr0, "optimizer": "AdamW"} if args.lr0 is not None else {}
    t0 = time.time()
    model.train(
        data=str(data_yaml), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seed=args.seed,
        deterministic=True, device="cpu", workers=0, amp=False, plots=False, pretrained=args.init is not None or args.init_onnx is not None,
        project=str(work), name="run", exist_ok=True, verbose=False, patience=1000, close_mosaic=args.close_mosaic,
        **extra,
    )
    return finish(args, work, data_yaml, train_s=time.time() - t0)


def init_from_onnx(args: argparse.Namespace, work: pathlib.Path, data_dir: pathlib.Path) -> pathlib.Path:
    """A trainable checkpoint rebuilt from ``--init-onnx`` (agent/tooling/training/onnx_to_yolo.py)."""
    import subprocess

    import cv2

    from agent.capture.synthetic import DEFECT_CLASSES
    from agent.errors import ModelError
    from agent.prefilter.factory import open_prefilter
    from agent.tooling.training.onnx_to_yolo import yolo_from_onnx

    source = args.init_onnx.resolve()
    runtime = open_prefilter(source)
    images = [runtime.preprocess(cv2.imread(str(path)))[0].copy()
              for path in sorted((data_dir / "images" / "train").iterdir())[:64]]
    try:
        checkpoint, rebuilt = yolo_from_onnx(source, len(DEFECT_CLASSES), work, images, tolerance=1e-3)
    except ModelError as exc:
        raise SystemExit(str(exc)) from exc
    if rebuilt["activation"] != args.activation:
        raise SystemExit(f"{source} uses {rebuilt['activation']} activations; give --activation {rebuilt['activation']}")
    print(f"init from {source.name}: rebuilt model vs ONNX, max relative difference "
          f"{rebuilt['max_relative_difference']:.2e}", flush=True)
    # the earlier stages, as the ONNX file's card tells them
    card = source.with_suffix(".md").read_text() if source.with_suffix(".md").exists() else ""
    earlier = read_earlier_training(card)
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h", "--", str(source)],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = ""
    (work / "init-onnx.json").write_text(json.dumps({
        "onnx": str(source.relative_to(REPO)) if source.is_relative_to(REPO) else str(source),
        "commit": commit, "training": earlier.training, "reproduce": list(earlier.reproduce),
        "metrics": {"mAP50": earlier.map50 if earlier.map50 is not None else float("nan")},
    }, indent=2))
    return checkpoint


def finish(args: argparse.Namespace, work: pathlib.Path, data_yaml: pathlib.Path, train_s: float | None) -> int:
    """Validate the best weights on the held-out split, export ONNX, write the record and the card."""
    from ultralytics import YOLO

    from agent.capture.synthetic import DEFECT_CLASSES

    if train_s is None:  # --finish-only: ultralytics' results.csv has the cumulative training time
        import csv

        with (work / "run" / "results.csv").open() as f:
            train_s = float(list(csv.DictReader(f))[-1]["time"])
    previous = None
    record_file = args.init.resolve().parent.parent.parent / "record.json" if args.init is not None else None
    if record_file is not None and record_file.exists():
        previous = json.loads(record_file.read_text())
    if args.init_onnx is not None:
        previous = json.loads((work / "init-onnx.json").read_text())
    best = work / "run" / "weights" / "best.pt"
    model = YOLO(str(best))
    metrics = model.val(data=str(data_yaml), imgsz=args.imgsz, batch=args.batch, device="cpu",
                        plots=False, workers=0, split="val", project=str(work), name="val", exist_ok=True)
    per_class = {}
    present = [int(c) for c in metrics.box.ap_class_index]  # classes seen in the val split
    for i, name in enumerate(DEFECT_CLASSES):
        if i not in present:
            continue
        p, r, ap50, ap = metrics.box.class_result(present.index(i))
        per_class[name] = {"precision": round(float(p), 4), "recall": round(float(r), 4),
                           "mAP50": round(float(ap50), 4), "mAP50-95": round(float(ap), 4)}
    summary = {
        "mAP50": round(float(metrics.box.map50), 4),
        "mAP50-95": round(float(metrics.box.map), 4),
        "per_class": per_class,
    }
    onnx_path = pathlib.Path(model.export(format="onnx", imgsz=args.imgsz, simplify=True, device="cpu"))
    args.models.mkdir(exist_ok=True)
    target = args.models / f"{args.name}.onnx"
    shutil.copyfile(onnx_path, target)

    import onnx
    import torch
    import ultralytics

    opset = onnx.load(str(target)).opset_import[0].version
    record = {
        "name": args.name, "nc": len(DEFECT_CLASSES), "date": datetime.date.today().isoformat(), "seed": args.seed,
        "train_images": args.train, "val_images": args.val, "epochs": args.epochs, "imgsz": args.imgsz,
        "batch": args.batch, "activation": args.activation, "train_seconds": round(train_s),
        "ultralytics": ultralytics.__version__, "torch": torch.__version__, "opset": opset,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "metrics": summary,
        "init": "random" if args.init is None and args.init_onnx is None else "fine-tuned from the previous stage",
        "lr0": args.lr0,
        "close_mosaic": args.close_mosaic,
        "previous_stage": previous,
    }
    (work / "record.json").write_text(json.dumps(record, indent=2))
    write_card(args.models / f"{args.name}.md", record)
    print(json.dumps(record, indent=2))
    return 0


def write_card(path: pathlib.Path, r: dict) -> None:  # type: ignore[type-arg]
    m = r["metrics"]
    rows = detector_class_table(m["per_class"])
    path.write_text(f"""# {r['name']} — conveyor defect detector (YOLOv8n, {r['activation']})

Finds four defect kinds on parts riding a conveyor belt: `scratch`, `hole`,
`stain`, `missing`. Trained only on the synthetic scene of
`agent/capture/synthetic.py`; it is a demo model, not one for a real line.

| | |
|---|---|
| file | `models/{r['name']}.onnx` (FP32, opset {r['opset']}, input 1x3x{r['imgsz']}x{r['imgsz']}, output 1x{4 + r['nc']}x{(r['imgsz'] // 8) ** 2 + (r['imgsz'] // 16) ** 2 + (r['imgsz'] // 32) ** 2}) |
| architecture | YOLOv8n from `yolov8n.yaml`, activation {r['activation']}, random init |
| dataset{' (last stage)' if r.get('previous_stage') else ''} | {r['train_images']} train / {r['val_images']} held-out val stills, 640x480, seed {r['seed']} (val uses seed {r['seed'] + 1}) |
| training | {stages(r)} |
| tools | ultralytics {r['ultralytics']}, torch {r['torch']}, {r['machine']} |
| date | {r['date']} |
| licence | AGPL-3.0-or-later (trained with ultralytics) |

## Validation on the held-out split

mAP50 **{m['mAP50']:.3f}**, mAP50-95 **{m['mAP50-95']:.3f}**.

| class | precision | recall | mAP50 | mAP50-95 |
|---|---|---|---|---|
{rows}

About a fifth of the defects are drawn faint on purpose (contrast 0.22–0.38);
the detector gives them lower scores, which is what sends a frame to the
triage band and, later, to the VLM.

## Reproduce

    pip install -e '.[train]'
{reproduce(r)}
""")


def stages(r: dict) -> str:  # type: ignore[type-arg]
    this = (f"{r['epochs']} epochs, imgsz {r['imgsz']}, batch {r['batch']}, seed {r['seed']}"
            f"{'' if r.get('lr0') is None else ', lr0 ' + str(r['lr0'])}"
            f"{'' if r.get('close_mosaic', 10) == 10 else ', no mosaic in the last ' + str(r['close_mosaic'])}"
            f", CPU, {r['train_seconds']} s")
    prev = r.get("previous_stage")
    if not prev:
        return this
    n = _depth(r)
    if "onnx" in prev:  # --init-onnx: the earlier stages as that file's card told them
        return (f"{prev['training']} (val mAP50 {prev['metrics']['mAP50']:.3f}); stage {n}, fine-tuned from the "
                f"stage {n - 1} export `{prev['onnx']}`{' (commit ' + prev['commit'] + ')' if prev['commit'] else ''}"
                f" with its BatchNorms re-estimated: {this}")
    first = "stage 1: " if not prev.get("previous_stage") else ""
    return (f"{first}{stages(prev)} (val mAP50 {prev['metrics']['mAP50']:.3f}); "
            f"stage {n}, fine-tuned from stage {n - 1}: {this}")


def _depth(r: dict) -> int:  # type: ignore[type-arg]
    if "onnx" in r:  # the card of an --init-onnx source: its highest stage number
        return max((int(n) for n in re.findall(r"stage (\d+)", r["training"])), default=1)
    return 1 if not r.get("previous_stage") else 1 + _depth(r["previous_stage"])


def reproduce(r: dict) -> str:  # type: ignore[type-arg]
    prev = r.get("previous_stage")
    lines = []
    n = _depth(r)
    if prev and "onnx" in prev:
        earlier = [f"    {line}" for line in prev["reproduce"] if not line.startswith("pip install")]
        if earlier and "#" not in earlier[-1]:
            earlier[-1] += f"  # stage {n - 1}, exported to {prev['onnx']}"
        lines.extend(earlier)
    elif prev:
        lines.append(reproduce(prev) + f"  # stage {n - 1}, into runs/train-detector")
        lines.append(f"    mv runs/train-detector runs/stage{n - 1}")
    cmd = (f"    python scripts/train_detector.py --train {r['train_images']} --val {r['val_images']} "
           f"--epochs {r['epochs']} --imgsz {r['imgsz']} --seed {r['seed']} --activation {r['activation']}")
    if r.get("lr0") is not None:
        cmd += f" --lr0 {r['lr0']}"
    if r.get("close_mosaic", 10) != 10:
        cmd += f" --close-mosaic {r['close_mosaic']}"
    if prev and "onnx" in prev:
        cmd += f" --init-onnx {prev['onnx']}"
    elif prev:
        cmd += f" --init runs/stage{n - 1}/run/weights/best.pt"
    lines.append(cmd)
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
