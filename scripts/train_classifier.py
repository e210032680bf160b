#!/usr/bin/env python3
"""Train the shipped conveyor frame classifier (a width-reduced ResNet-18) offline and export it to ONNX.

Reproducible: the dataset is rendered from a seed (the same pictures as
``edge-agent dataset synth --task classify``), training uses the same seed with
deterministic kernels on the CPU, and every setting plus the held-out metrics
(measured through the agent's own ONNX runtime, not through torch) go into the
model card ``models/<name>.md``. Needs the ``train`` extra (torch, torchvision)::

    pip install -e '.[train]'
    python scripts/train_classifier.py            # 3000 train / 600 val frames, 12 + 8 epochs

The network is ResNet-18's layout (a 7x7/2 stem, max pool, four stages of two
torchvision ``BasicBlock`` s, a global pool, one linear layer) with every width
divided by ``64 / --width``; ``--width 64 --pool avg`` is torchvision's resnet18
exactly. The head pools the last feature map by average *and* maximum, so that
a defect of a few pixels is not averaged away. Random init; nothing is downloaded.

Training has two phases on the same network: first patches of the training
frames (one around each defect, labelled with it, and defect-free ones labelled
``pass``; the boxes come from the dataset's ``truth/train.jsonl``), then whole
frames with their frame labels. Learning from frame labels alone was several
times slower (the model card has the numbers).

The ONNX model takes ``images`` (1, 3, H, W): the frame resized (stretch, INTER_AREA)
to W x H, RGB, ``(v / 255 - mean) / std``; and returns ``output0`` (1, classes):
softmax probabilities. Its metadata says all of that (``agent/prefilter/model_info.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import sys
import time
from typing import Any

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from classifier_card import write_card  # noqa: E402  (beside this script)

from agent.errors import EdgeAgentError  # noqa: E402
from agent.prefilter.classify_input import Normalisation  # noqa: E402
from agent.tooling.training.resnet import (  # noqa: E402  (the network, data preparation and export shared with models train)
    INTERPOLATION,
    MEAN,
    RESIZE,
    STD,
    build_net,
    evaluate_torch,
    export_classifier,
    load_split,
    lr_at,
    make_optimizer,
    to_tensor,
    train_frame_epoch,
)

# -- data ---------------------------------------------------------------------------------------------------


def load_boxes(root: pathlib.Path, split: str, files: list[str], names: tuple[str, ...], h: int,
               w: int) -> list[np.ndarray]:
    """Per image, its defects as rows (class id, x1, y1, x2, y2) in model-input pixels (stretch), from
    the dataset's truth/<split>.jsonl."""
    info = json.loads((root / "dataset.json").read_text())
    src_w, src_h = info.get("size", [640, 480])
    truth = {}
    for line in (root / "truth" / f"{split}.jsonl").read_text().splitlines():
        doc = json.loads(line)
        truth[doc["file"]] = doc["defects"]
    scale = np.array([w / src_w, h / src_h, w / src_w, h / src_h])
    out = []
    for f in files:
        rows = [[names.index(d["label"]), *(np.asarray(d["box"]) * scale)] for d in truth[f]]
        out.append(np.asarray(rows, np.float64).reshape(-1, 5))
    return out


PAINT_ORDER = ("stain", "scratch", "hole", "missing")  # least severe first: a patch is named by its most severe defect


def _crop(image: np.ndarray, x0: int, y0: int, size: int) -> np.ndarray:
    """``size`` x ``size`` pixels from (x0, y0), the edge pixels repeated outside the image."""
    h, w = image.shape[:2]
    ys = np.clip(np.arange(y0, y0 + size), 0, h - 1)
    xs = np.clip(np.arange(x0, x0 + size), 0, w - 1)
    out: np.ndarray = image[ys][:, xs]
    return out


def sample_patches(images: np.ndarray, boxes: list[np.ndarray], names: tuple[str, ...], rng: np.random.Generator,
                   size: int, background: int) -> tuple[np.ndarray, np.ndarray]:
    """One patch per defect (centred on it, +-size/5 jitter; labelled with the most severe defect whose centre
    is inside) and ``background`` patches per frame that touch no defect (labelled pass)."""
    patches: list[np.ndarray] = []
    targets: list[int] = []
    rank = {names.index(c): r for r, c in enumerate(PAINT_ORDER)}
    h, w = images.shape[1:3]
    jitter = size / 5
    for i, rows in enumerate(boxes):
        centres = (rows[:, 1:3] + rows[:, 3:5]) / 2
        for cx, cy in centres:
            x0 = int(round(cx + rng.uniform(-jitter, jitter) - size / 2))
            y0 = int(round(cy + rng.uniform(-jitter, jitter) - size / 2))
            inside = (centres[:, 0] >= x0) & (centres[:, 0] < x0 + size) & (centres[:, 1] >= y0) & \
                (centres[:, 1] < y0 + size)
            patches.append(_crop(images[i], x0, y0, size))
            targets.append(max((int(c) for c in rows[inside, 0]), key=lambda c: rank[c]))
        for _ in range(background):
            for _attempt in range(20):
                x0, y0 = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
                if not np.any((rows[:, 1] < x0 + size + 2) & (rows[:, 3] > x0 - 2) & (rows[:, 2] < y0 + size + 2)
                              & (rows[:, 4] > y0 - 2)):
                    patches.append(_crop(images[i], x0, y0, size))
                    targets.append(0)
                    break
    return np.stack(patches), np.asarray(targets, np.int64)


# -- training -----------------------------------------------------------------------------------------------


def train(args: argparse.Namespace, names: tuple[str, ...], data: pathlib.Path, work: pathlib.Path) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    x_train, y_train, boxes, x_val, y_val = _training_data(args, names, data)
    norm = Normalisation(MEAN, STD)
    val_tensor = torch.from_numpy(to_tensor(x_val, norm))

    net = build_net(args.width, len(names), args.pool)
    params = sum(p.numel() for p in net.parameters())

    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    rng = np.random.default_rng(args.seed)
    history: list[dict[str, Any]] = []
    t_train = time.time()
    # phase 1: the same network on patches around defects and of empty belt/parts (many clean, cheap samples)
    _patch_phase(args, net, loss_fn, x_train, boxes, names, rng, norm, history)

    # phase 2: whole frames (agent/tooling/training/resnet.py, the loop `edge-agent models train` fine-tunes with)
    opt = make_optimizer(net, args.optimizer, args.lr, args.weight_decay)
    steps_per_epoch = len(y_train) // args.batch
    step = 0
    for epoch in range(1, args.epochs + 1):
        t_epoch = time.time()
        train_loss, train_acc, step = train_frame_epoch(
            net, opt, loss_fn, x_train, y_train, args.batch, rng, args.shift, norm,
            lambda s: lr_at(s, steps_per_epoch, args.epochs, args.frame_lr), step)
        val_acc, val_loss = evaluate_torch(net, val_tensor, torch.from_numpy(y_val), loss_fn)
        row = {"phase": "frames", "epoch": epoch, "train_loss": round(train_loss, 4),
               "train_acc": round(train_acc, 4),
               "val_loss": round(val_loss, 4), "val_acc": round(val_acc, 4), "seconds": round(time.time() - t_epoch)}
        history.append(row)
        print(json.dumps(row), flush=True)
    train_s = time.time() - t_train
    torch.save({"state_dict": net.state_dict(), "width": args.width, "pool": args.pool, "names": names},
               work / "model.pt")
    return {"params": params, "train_seconds": round(train_s), "history": history,
            "train_counts": {n: int((y_train == i).sum()) for i, n in enumerate(names)},
            "val_counts": {n: int((y_val == i).sum()) for i, n in enumerate(names)}}


def _training_data(args: argparse.Namespace, names: tuple[str, ...], data: pathlib.Path
                   ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    """(train images, train labels, train boxes, val images, val labels) at the input size."""
    h, w = args.imgsz
    if args.patch_epochs and args.patch_size > min(h, w):
        raise SystemExit(f"--patch-size {args.patch_size} does not fit the {w}x{h} input; expected at most {min(h, w)}")
    t0 = time.time()
    x_train, y_train, files = load_split(data, "train", names, h, w)
    boxes = load_boxes(data, "train", files, names, h, w)
    if args.max_train and args.max_train < len(y_train):  # quick experiments: a fixed random subset
        keep = np.sort(np.random.default_rng(args.seed).permutation(len(y_train))[:args.max_train])
        x_train, y_train, boxes = x_train[keep], y_train[keep], [boxes[i] for i in keep]
    x_val, y_val, _ = load_split(data, "val", names, h, w)
    print(f"loaded {len(y_train)} train / {len(y_val)} val images at {w}x{h} in {time.time() - t0:.0f} s", flush=True)
    return x_train, y_train, boxes, x_val, y_val


def _patch_phase(args: argparse.Namespace, net: Any, loss_fn: Any, x_train: np.ndarray, boxes: list[np.ndarray],
                 names: tuple[str, ...], rng: np.random.Generator, norm: Normalisation,
                 history: list[dict[str, Any]]) -> None:
    """--patch-epochs epochs on fresh patches each (flipped at random), one row per epoch into ``history``."""
    import torch

    opt = make_optimizer(net, args.optimizer, args.lr, args.weight_decay)
    step = 0
    for epoch in range(1, args.patch_epochs + 1):
        net.train()
        patches, targets = sample_patches(x_train, boxes, names, rng, args.patch_size, args.patch_background)
        order = rng.permutation(len(targets))
        steps = len(order) // args.batch
        running, correct, t_epoch = 0.0, 0, time.time()
        for b in range(steps):
            idx = order[b * args.batch:(b + 1) * args.batch]
            flipped = patches[idx].copy()
            for i in range(len(idx)):
                if rng.random() < 0.5:
                    flipped[i] = flipped[i, :, ::-1]
                if rng.random() < 0.5:
                    flipped[i] = flipped[i, ::-1]
            xb = torch.from_numpy(to_tensor(flipped, norm))
            yb = torch.from_numpy(targets[idx])
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, args.patch_epochs, args.lr)
            opt.zero_grad(set_to_none=True)
            logits = net(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            opt.step()
            step += 1
            running += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        row = {"phase": "patches", "epoch": epoch, "patches": steps * args.batch,
               "train_loss": round(running / (steps * args.batch), 4),
               "train_acc": round(correct / (steps * args.batch), 4), "seconds": round(time.time() - t_epoch)}
        history.append(row)
        print(json.dumps(row), flush=True)


# -- export ------------------------------------------------------------------------------------------------


def export_onnx(work: pathlib.Path, target: pathlib.Path, args: argparse.Namespace, names: tuple[str, ...],
                data_info: dict[str, Any]) -> None:
    """ONNX with softmax probabilities, opset 17, fixed batch 1, and the metadata the runtime reads; checked
    against torch on real frames (agent/tooling/training/resnet.py export_classifier)."""
    import torch

    import agent

    checkpoint = torch.load(work / "model.pt", weights_only=True)
    net = build_net(checkpoint["width"], len(names), checkpoint.get("pool", "avg"))
    net.load_state_dict(checkpoint["state_dict"])
    h, w = args.imgsz
    meta = {
        "description": f"edge-agent conveyor frame classifier, ResNet-18 layout at width {checkpoint['width']}",
        "author": "edge-agent (scripts/train_classifier.py)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": agent.__version__ if hasattr(agent, "__version__") else "0.1.0",
        "license": "AGPL-3.0-or-later",
        "task": "classify",
        "names": repr(dict(enumerate(names))),
        "imgsz": repr([h, w]),
        "batch": "1",
        "channels": "3",
        "resize": RESIZE,
        "interpolation": INTERPOLATION,
        "mean": repr(list(MEAN)),
        "std": repr(list(STD)),
        "output": "probabilities",
        "label_rule": data_info.get("label_rule", "severity"),
    }
    x_val, _, _ = load_split(pathlib.Path(args.data_dir), "val", names, h, w)
    try:
        export_classifier(net, target, (h, w), meta, to_tensor(x_val[:8], Normalisation(MEAN, STD)))
    except EdgeAgentError as exc:
        raise SystemExit(str(exc)) from exc


# -- evaluation through the agent's runtime, and the model card ------------------------------------------------


def evaluate_runtime(target: pathlib.Path, data: pathlib.Path, threads: int) -> dict[str, Any]:
    import cv2

    from agent.config.models import ModelConfig, TriageConfig
    from agent.prefilter.classifier import ImageClassifier
    from agent.tooling.evaluation.classify_dataset import evaluate_classifier, read_classify_dataset, triage_summary

    classifier = ImageClassifier.from_file(target, ModelConfig(path=target, intra_op_threads=threads))
    names = classifier.info.names
    dataset = read_classify_dataset(data, "val", names=names)
    results: dict[str, Any] = {}

    def keep(item: Any, result: Any) -> None:
        results[item.path.relative_to(data).as_posix()] = result

    metrics = evaluate_classifier(classifier, dataset, on_result=keep)
    truth = {}
    for line in (data / "truth" / "val.jsonl").read_text().splitlines():
        doc = json.loads(line)
        truth[doc["file"]] = doc
    faint_total = faint_right = verdict_right = 0
    for rel, result in results.items():
        label = truth[rel]["label"]
        top = result.ranked[0][0]
        defects = truth[rel]["defects"]
        if defects and all(d["faint"] for d in defects):
            faint_total += 1
            faint_right += top == label
        verdict_right += (top == "pass") == (label == "pass")
    band = TriageConfig()
    t = triage_summary([(truth[rel]["label"], r) for rel, r in results.items()], band)
    # FP32 latency of the whole prefilter call (resize + normalise + inference + softmax ranking), 2 threads
    image = cv2.imread(str(dataset.images[0].path), cv2.IMREAD_COLOR)
    timer = ImageClassifier.from_file(target, ModelConfig(path=target, intra_op_threads=2))
    for _ in range(10):
        timer.infer(image)
    lat = sorted(timer.infer(image).latency_ms for _ in range(200))
    return {
        "accuracy": round(metrics.accuracy, 4), "macro_f1": round(metrics.macro_f1, 4),
        "per_class": {c.name: {"support": c.support, "precision": round(c.precision, 4),
                               "recall": round(c.recall, 4), "f1": round(c.f1, 4)} for c in metrics.classes},
        "confusion_matrix": [list(r) for r in metrics.confusion_matrix], "names": list(names),
        "verdict_accuracy": round(verdict_right / len(results), 4),
        "faint_only": {"frames": faint_total, "accuracy": round(faint_right / faint_total, 4) if faint_total else None},
        "triage": {"accept": band.accept, "margin": band.margin, "decided": t.decided, "frames": t.frames,
                   "decided_accuracy": None if t.decided_accuracy is None else round(t.decided_accuracy, 4),
                   "defects_passed": t.defects_passed},
        "latency_ms": {"p50": round(lat[100], 2), "p90": round(lat[180], 2), "threads": 2},
    }


def main() -> int:
    ap = _parser()
    args = ap.parse_args()

    from agent.tooling.dataset.synth import CLASSIFY_NAMES

    names = CLASSIFY_NAMES
    work: pathlib.Path = args.workdir
    data: pathlib.Path = args.data if args.data is not None else work / "dataset"
    args.data_dir = str(data)
    record_path = work / "record.json"
    if not args.finish_only:
        _ensure_dataset(args, data)
        work.mkdir(parents=True, exist_ok=True)
        record = train(args, names, data, work)
        record_path.write_text(json.dumps(record, indent=1))
    record = json.loads(record_path.read_text())
    data_info = json.loads((data / "dataset.json").read_text())

    target = args.models / f"{args.name}.onnx"
    export_onnx(work, target, args, names, data_info)
    metrics = evaluate_runtime(target, data, args.threads)
    record.update(_settings(args, ap, data_info, target, metrics))
    record_path.write_text(json.dumps(record, indent=1))
    write_card(args.models / f"{args.name}.md", record)
    print(json.dumps({k: record[k] for k in ("name", "train_seconds", "file_bytes", "metrics")}, indent=1))
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="conveyor-resnet-cls")
    ap.add_argument("--train", type=int, default=3000, help="training images")
    ap.add_argument("--val", type=int, default=600, help="held-out validation images")
    ap.add_argument("--epochs", type=int, default=8, help="epochs on whole frames")
    ap.add_argument("--imgsz", type=int, nargs=2, default=[192, 256], metavar=("H", "W"), help="input height, width")
    ap.add_argument("--width", type=int, default=16, help="channels of the first stage (64 = resnet18)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--pool", choices=["avgmax", "avg"], default="avgmax",
                    help="head: global average and max pooling concatenated, or average only (torchvision's)")
    ap.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (SGD: try 0.05)")
    ap.add_argument("--frame-lr", type=float, default=5e-4, help="peak learning rate of the frame phase")
    ap.add_argument("--weight-decay", type=float, default=1e-4, help="(SGD, coupled: try 5e-4)")
    ap.add_argument("--patch-epochs", type=int, default=12,
                    help="epochs on patches (around defects, and of empty belt and parts) before the frames; 0 = none")
    ap.add_argument("--patch-size", type=int, default=64, help="patch side in input pixels")
    ap.add_argument("--patch-background", type=int, default=2, help="defect-free patches per frame and epoch")
    ap.add_argument("--max-train", type=int, default=0, help="train on a fixed random subset of this many images "
                    "(quick experiments; 0 = all)")
    ap.add_argument("--label-smoothing", type=float, default=0.05)
    ap.add_argument("--shift", type=int, default=8, help="largest random shift in input pixels")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--label-rule", choices=["severity", "area"], default="severity")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (results are reproducible per count)")
    ap.add_argument("--data", type=pathlib.Path, default=None,
                    help="an existing classify dataset (default: render one into WORKDIR/dataset)")
    ap.add_argument("--workdir", type=pathlib.Path, default=REPO / "runs" / "train-classifier")
    ap.add_argument("--models", type=pathlib.Path, default=REPO / "models")
    ap.add_argument("--finish-only", action="store_true",
                    help="skip training: export, evaluate and write the card from WORKDIR/model.pt and record.json")
    return ap


def _ensure_dataset(args: argparse.Namespace, data: pathlib.Path) -> None:
    """Render the dataset into ``data`` unless --data names one or the one there has the wanted seed and sizes."""
    if args.data is not None:
        return
    from agent.tooling.dataset.synth import write_classify_dataset

    wanted = {"seed": args.seed, "label_rule": args.label_rule}
    info_path = data / "dataset.json"
    ok = False
    if info_path.exists():
        info = json.loads(info_path.read_text())
        ok = {k: info.get(k) for k in wanted} == wanted and \
            [sum(info["counts"][s].values()) for s in ("train", "val")] == [args.train, args.val]
    if not ok:
        if data.exists():
            shutil.rmtree(data)
        t0 = time.time()

        def progress(split: str, done: int, total: int) -> None:
            if done == total or done % 250 == 0:
                print(f"dataset {split}: {done}/{total} ({time.time() - t0:.0f} s)", flush=True)

        write_classify_dataset(data, args.train, args.val, seed=args.seed, progress=progress,
                               rule=args.label_rule)
    else:
        print(f"reusing the dataset in {data}", flush=True)


def _settings(args: argparse.Namespace, ap: argparse.ArgumentParser, data_info: dict[str, Any],
              target: pathlib.Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """What the card says about the run: every setting, the data, the tools, the file, the held-out metrics."""
    import onnx
    import torch
    import torchvision

    cmd = ["python scripts/train_classifier.py"]
    for k, v in vars(args).items():  # every setting that is not the default (where files go does not matter)
        if k in ("workdir", "models", "data", "data_dir", "finish_only") or v == ap.get_default(k):
            continue
        cmd.append(f"--{k.replace('_', '-')} " + (" ".join(map(str, v)) if isinstance(v, list) else str(v)))
    return {
        "name": args.name, "date": datetime.date.today().isoformat(), "seed": args.seed,
        "train_images": sum(data_info["counts"]["train"].values()),
        "val_images": sum(data_info["counts"]["val"].values()),
        "label_rule": data_info["label_rule"], "epochs": args.epochs, "imgsz": list(args.imgsz), "width": args.width,
        "batch": args.batch, "lr": args.lr, "frame_lr": args.frame_lr, "optimizer": args.optimizer, "pool": args.pool,
        "patch_epochs": args.patch_epochs, "patch_size": args.patch_size, "patch_background": args.patch_background,
        "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing,
        "shift": args.shift, "threads": args.threads, "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "opset": onnx.load(str(target)).opset_import[0].version, "file_bytes": target.stat().st_size,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "metrics": metrics, "command": " ".join(cmd),
    }


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except EdgeAgentError as exc:  # a bad image or model: the message, not a traceback
        raise SystemExit(f"error: {exc}") from None
