"""Fine-tune the YOLOv8 detector with ultralytics, starting from an exported ONNX model, and export ONNX.

The ONNX base is turned back into trainable weights (``onnx_to_yolo``), trained on the
dataset's train split with ultralytics' detection trainer (offline, deterministic, CPU,
no plots, no AMP, no worker processes: api-facts §6.6), validated every epoch on the val
split, and the best epoch exported to ONNX with the base model's input size.

The dataset is linked (symlinks, numbered) into the work folder first, so ultralytics'
label cache lands there and not in the user's dataset, and whatever the dataset's own
``data.yaml`` points at, ultralytics reads exactly the images that were checked.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import platform
import time
from collections.abc import Callable
from typing import Any

import cv2

from agent.errors import DatasetError, ModelError
from agent.prefilter.factory import open_prefilter
from agent.tooling.evaluation.dataset import label_path
from agent.tooling.training.base import YAML_NAME, BaseModel
from agent.tooling.training.data import NEW_CLASSES_HINT, TrainingData
from agent.tooling.training.extras import configure_ultralytics
from agent.tooling.training.progress import EpochRow
from agent.tooling.training.trained import TrainedModel
from agent.tooling.training.yolo_arch import model_yaml

BN_IMAGES = 64  # training images whose statistics re-create the BatchNorms
FP32_TOLERANCE = 1e-3  # rebuilt model vs an FP32 ONNX base: relative output difference
INT8_TOLERANCE = 0.1  # vs an INT8 base, whose own rounding is a few percent


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    epochs: int = 10
    imgsz: int | None = None  # default: the base model's input size
    batch: int = 16
    lr0: float = 2e-4  # AdamW; the shipped model's last stages used 2e-4 and 1e-4
    new_head_lr0: float = 1e-3  # AdamW, a new head (or from scratch): ultralytics' own choice for a few classes
    close_mosaic: int | None = None  # last epochs without mosaic; default: all of them (a fine-tune)
    seed: int = 7
    threads: int = 2
    verbose: bool = False  # ultralytics' own output
    export_epoch: str = "best"  # best (ultralytics' val fitness) or last
    time_h: float | None = None  # budget in hours (ultralytics' time=, which then sets the epochs)
    new_head: bool = False  # the dataset's classes, a new head: ultralytics' augmentation schedule (mosaic)
    freeze: int | None = None  # first layers kept as they are; default: the backbone for a new head on a trained one


BACKBONE_LAYERS = 10  # YOLOv8's backbone: model.0 .. model.9 (the neck and head follow)


def schedule(settings: DetectorSettings, base: BaseModel) -> dict[str, Any]:
    """Ultralytics' optimisation settings for the run (see the README's "new classes" section).

    * fine-tune (the base's own classes): no mosaic (``close_mosaic`` = all epochs), ultralytics' warm-up;
    * from scratch (a model yaml): ultralytics' own schedule (mosaic off for the last 10 epochs, 3 warm-up
      epochs, one optimiser step per 64 images);
    * a new head on a trained backbone (``--new-classes``): the backbone frozen (its features are what is
      kept; the iterations get cheaper), no warm-up (the new class outputs start quiet, ``quiet_new_head``)
      and one optimiser step per batch (``nbs`` = batch): in a budget of minutes on a CPU a run sees a few
      hundred batches, and ultralytics' step per 64 images with 3 warm-up epochs spends most of them at a
      low learning rate, taking a few dozen steps in all.
    """
    transfer = settings.new_head and base.kind != "yaml"
    fresh = settings.new_head or base.kind != "onnx"
    out: dict[str, Any] = {
        "close_mosaic": settings.close_mosaic if settings.close_mosaic is not None else (10 if fresh
                                                                                         else settings.epochs),
        "freeze": settings.freeze if settings.freeze is not None else (BACKBONE_LAYERS if transfer else None),
    }
    if transfer:
        out.update(warmup_epochs=0.0, nbs=settings.batch)
    return out


def link_dataset(data: TrainingData, target: pathlib.Path) -> pathlib.Path:
    """``target/images/{train,val}/NNNNNN.ext`` and ``target/labels/...`` as symlinks to the checked
    files, and ``target/data.yaml``; returns the yaml."""
    for split, images in (("train", data.train), ("val", data.val)):
        (target / "images" / split).mkdir(parents=True)
        (target / "labels" / split).mkdir(parents=True)
        for i, image in enumerate(images):
            (target / "images" / split / f"{i:06d}{image.suffix.lower()}").symlink_to(image.resolve())
            label = label_path(image)
            if label.exists():
                (target / "labels" / split / f"{i:06d}.txt").symlink_to(label.resolve())
    yaml_path = target / "data.yaml"
    names = "\n".join(f"  {i}: {n!r}" for i, n in enumerate(data.names))
    yaml_path.write_text(f"# linked from {data.source} by edge-agent models train\npath: {target.resolve()}\n"
                         f"train: images/train\nval: images/val\nnames:\n{names}\n")
    return yaml_path


def _bn_images(base: BaseModel, data: TrainingData) -> list[Any]:
    """Training images prepared exactly as the base model's runtime prepares frames."""
    model = open_prefilter(base.path)
    out = []
    for path in data.train[:BN_IMAGES]:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"image {path}: OpenCV cannot decode it; expected a JPEG, PNG or BMP file")
        out.append(model.preprocess(image)[0].copy())
    return out


def _epoch_row(trainer: Any, started: float) -> EpochRow:
    losses = {str(k).removesuffix("_loss"): float(v) for k, v in (trainer.tloss or {}).items()}
    metrics = trainer.metrics or {}
    wanted = {"mAP50": "metrics/mAP50(B)", "mAP50-95": "metrics/mAP50-95(B)"}
    return EpochRow(epoch=trainer.epoch + 1, epochs=trainer.epochs, losses=losses,
                    metrics={k: float(metrics[v]) for k, v in wanted.items() if v in metrics},
                    elapsed_s=time.monotonic() - started)


def _start_model(base: BaseModel, data: TrainingData, settings: DetectorSettings, work: pathlib.Path,
                 say: Callable[[str], None]) -> tuple[Any, str, str]:
    """The ultralytics model training starts from, its architecture and its init (for the card)."""
    from ultralytics import YOLO  # type: ignore[attr-defined,unused-ignore]

    if base.kind == "yaml":
        yaml_path = base.path
        match = YAML_NAME.match(base.path.name)
        if not base.path.is_file() and match:  # ultralytics' own name: the same architecture, written here
            yaml_path = work / base.path.name
            yaml_path.write_text(model_yaml(len(data.names), "silu", match.group(1)))
        try:
            model = YOLO(str(yaml_path), task="detect")
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ModelError(f"--base {base.path}: ultralytics cannot build a model from it ({exc}); expected a "
                             "YOLOv8 model yaml such as yolov8n.yaml") from exc
        return model, f"{base.path.name} (ultralytics model yaml)", "from scratch (random weights)"
    if base.kind == "checkpoint":
        return _checkpoint_model(base, data, settings)
    from agent.tooling.training.onnx_to_yolo import yolo_from_onnx

    t0 = time.monotonic()
    checkpoint, rebuilt = yolo_from_onnx(base.path, len(base.names), work, _bn_images(base, data),
                                         INT8_TOLERANCE if base.quantized else FP32_TOLERANCE)
    say(f"rebuilt YOLOv8{rebuilt['scale']} ({rebuilt['activation']}) from {base.path.name}: output within "
        f"{rebuilt['max_relative_difference']:.1e} of the ONNX model ({time.monotonic() - t0:.0f} s)")
    init = (f"rebuilt from {base.path.name} (BatchNorms re-estimated on {min(BN_IMAGES, len(data.train))} "
            f"training images; output within {rebuilt['max_relative_difference']:.1e} of the ONNX model)")
    if settings.new_head:
        init += f"; new head for {len(data.names)} classes (its {len(base.names)} class outputs dropped)"
    return (YOLO(str(checkpoint), task="detect"), f"YOLOv8{rebuilt['scale']}, {rebuilt['activation']} activation",
            init)


def _checkpoint_model(base: BaseModel, data: TrainingData, settings: DetectorSettings) -> tuple[Any, str, str]:
    from ultralytics import YOLO  # type: ignore[attr-defined,unused-ignore]

    try:
        model = YOLO(str(base.path), task="detect")
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds for a file that is not a checkpoint
        raise ModelError(f"--base {base.path}: not an ultralytics checkpoint ({type(exc).__name__}: {exc}); "
                         "expected a detector .pt such as yolov8n.pt") from exc
    if getattr(model, "task", "detect") != "detect":
        raise ModelError(f"--base {base.path} is an ultralytics {model.task} checkpoint; expected a detector (.pt "
                         "of task detect) for a YOLO dataset")
    names = tuple(str(n) for _, n in sorted(dict(model.names).items()))
    if names != data.names and not settings.new_head:
        raise DatasetError(f"the dataset's classes are not the checkpoint's: {data.data_yaml} has "
                           f"{', '.join(data.names)}, {base.path.name} has {len(names)} ({', '.join(names[:8])}"
                           f"{', ...' if len(names) > 8 else ''}); {NEW_CLASSES_HINT}")
    init = f"ultralytics checkpoint {base.path.name} ({len(names)} classes)"
    return model, f"{base.path.name} (ultralytics checkpoint)", init + (
        f"; new head for {len(data.names)} classes" if names != data.names else "")


def quiet_new_head(model: Any) -> int:
    """Zero the weights of the head's last class convolutions (the new ones: their shapes changed with the
    class count), leaving ultralytics' prior bias (every class unlikely everywhere). Random weights over a
    trained backbone's large features start with confident false positives on every anchor (a class loss
    30x that of a model from scratch) that the first epochs spend unlearning. Returns how many were zeroed."""
    import torch

    head = model.model[-1]
    with torch.no_grad():
        for branch in head.cv3:
            branch[-1].weight.zero_()
    return len(head.cv3)


def finetune_detector(base: BaseModel, data: TrainingData, settings: DetectorSettings, work: pathlib.Path,
                      on_epoch: Callable[[EpochRow], None], say: Callable[[str], None]) -> TrainedModel:
    """Train in ``work`` (an empty folder); ``on_epoch`` gets one row per epoch, ``say`` the other news."""
    configure_ultralytics(work / "ultralytics-config", settings.verbose)
    import torch
    import ultralytics
    from ultralytics import YOLO  # type: ignore[attr-defined,unused-ignore]

    h, w = base.imgsz
    imgsz = settings.imgsz or max(h, w)
    if settings.imgsz is None and h != w:
        raise ModelError(f"--base {base.path}: input {w}x{h} is not square; give --imgsz (ultralytics trains on "
                         "square images)")
    torch.manual_seed(settings.seed)
    data_yaml = link_dataset(data, work / "data")
    model, architecture, init = _start_model(base, data, settings, work, say)
    history: list[EpochRow] = []
    started = time.monotonic()

    def threads(trainer: Any) -> None:  # ultralytics' select_device resets the thread count
        torch.set_num_threads(settings.threads)
        if settings.new_head and base.kind != "yaml":  # a kept backbone, new class outputs
            quiet_new_head(trainer.model)
            if trainer.ema is not None:
                quiet_new_head(trainer.ema.ema)

    def epoch_end(trainer: Any) -> None:
        if trainer.epoch >= trainer.epochs or (history and trainer.epoch + 1 <= history[-1].epoch):
            return  # the final validation of best.pt calls this again; it is not an epoch
        row = _epoch_row(trainer, started)
        history.append(row)
        on_epoch(row)

    model.add_callback("on_train_start", threads)
    model.add_callback("on_fit_epoch_end", epoch_end)
    plan = schedule(settings, base)
    extra: dict[str, Any] = {} if settings.time_h is None else {"time": settings.time_h}
    model.train(data=str(data_yaml), epochs=settings.epochs, imgsz=imgsz, batch=settings.batch, seed=settings.seed,
                deterministic=True, device="cpu", workers=0, amp=False, plots=False, pretrained=base.kind != "yaml",
                project=str(work), name="run", exist_ok=True, verbose=settings.verbose, patience=1000,
                optimizer="AdamW", lr0=settings.lr0, val=True, **plan, **extra,
                warmup_bias_lr=settings.lr0)  # ultralytics' default 0.1 for biases would undo a fine-tune
    train_s = time.monotonic() - started
    chosen = work / "run" / "weights" / f"{settings.export_epoch}.pt"
    if not chosen.exists():
        raise ModelError(f"training ended without a checkpoint ({chosen} is missing); see {work / 'run'}")
    say(f"exporting the {settings.export_epoch} epoch to ONNX ({imgsz}x{imgsz})")
    exported = pathlib.Path(YOLO(str(chosen)).export(format="onnx", imgsz=imgsz, simplify=True, device="cpu"))
    return TrainedModel(onnx=exported, history=tuple(history), train_seconds=train_s, settings={
        "epochs": settings.epochs, "imgsz": imgsz, "batch": settings.batch, "optimizer": "AdamW",
        "lr0": settings.lr0, **plan, "seed": settings.seed, "threads": settings.threads,
        "export_epoch": settings.export_epoch, "time_h": settings.time_h,
    }, details={
        "architecture": architecture,
        "init": init,
        "input": [imgsz, imgsz],
        "tools": f"ultralytics {ultralytics.__version__}, torch {torch.__version__}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    })
