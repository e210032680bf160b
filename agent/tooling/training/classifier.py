"""Fine-tune the frame classifier (plain torch), starting from its exported ONNX model, and export ONNX.

The network is rebuilt from the base file (``onnx_to_resnet``; an INT8 base gives its dequantized
weights), trained on the dataset's whole frames (the frame phase of scripts/train_classifier.py:
AdamW, one epoch of warm-up then cosine, flips, shifts, brightness/contrast; no patch phase, which
needs defect boxes an image-folder dataset does not have) with the BatchNorms frozen at the
re-created statistics (a few hundred frames cannot re-estimate them better, and batch statistics of
16 frames would move the function away from the base model's), measured on the val split after every
epoch, and the last epoch exported with the base model's input preparation in its metadata.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import platform
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.errors import ModelError
from agent.tooling.training.base import BaseModel
from agent.tooling.training.data import TrainingData
from agent.tooling.training.progress import EpochRow
from agent.tooling.training.trained import TrainedModel

if TYPE_CHECKING:
    from agent.tooling.training.resnet import InputPrep

BN_IMAGES = 64
FP32_TOLERANCE = 1e-3  # mean absolute probability difference, rebuilt network vs an FP32 base
INT8_TOLERANCE = 0.05  # vs an INT8 base, whose activations are rounded
# metadata keys carried over from the base model (the input preparation and what the classes mean)
CARRIED_KEYS = ("task", "names", "batch", "channels", "resize", "interpolation", "mean", "std", "output",
                "label_rule", "license")


@dataclasses.dataclass(frozen=True)
class ClassifierSettings:
    epochs: int = 10
    imgsz: tuple[int, int] | None = None  # (h, w); default: the base model's input
    batch: int = 16
    lr: float = 2e-5  # peak, AdamW: the first Adam steps move every weight by about lr, and the folded
    # weights are small (1e-4 cost the shipped classifier 75 points of val accuracy after one step on 16 frames)
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    shift: int = 8
    seed: int = 7
    threads: int = 2
    new_head_lr: float = 3e-4  # peak, AdamW, for a new head (a fresh linear layer needs more than 2e-5)
    time_h: float | None = None  # budget in hours: no epoch starts after it (the cosine schedule keeps --epochs)
    new_head: bool = False  # the dataset's classes: a new linear layer on the base's backbone


def _prep(base: BaseModel, imgsz: tuple[int, int]) -> Any:
    from agent.tooling.training.resnet import InputPrep

    ci = base.info.classifier_input if base.info else None
    if ci is None:
        raise ModelError(f"--base {base.path}: no classifier input description; expected a classifier")
    if ci.output != "probabilities":
        raise ModelError(f"--base {base.path}: its output is {ci.output}; the frame classifier exports probabilities")
    return InputPrep(imgsz[0], imgsz[1], ci.resize, ci.interpolation, ci.normalisation)


def finetune_classifier(base: BaseModel, data: TrainingData, settings: ClassifierSettings, work: pathlib.Path,
                        on_epoch: Callable[[EpochRow], None], say: Callable[[str], None]) -> TrainedModel:
    import torch
    import torchvision
    from torch import nn

    from agent.tooling.training.resnet import (
        evaluate_torch,
        export_classifier,
        load_images,
        lr_at,
        make_optimizer,
        to_tensor,
    )
    from agent.tooling.training.resnet import train_frame_epoch as run_epoch

    _deterministic(torch, settings)
    base_prep = _prep(base, base.imgsz)
    prep = _prep(base, settings.imgsz or base.imgsz)
    names = data.names if settings.new_head else base.names
    t0 = time.monotonic()
    train_ids = np.asarray([names.index(c) for c in data.train_classes], np.int64)
    val_ids = np.asarray([names.index(c) for c in data.val_classes], np.int64)
    x_train, x_val = load_images(data.train, prep), load_images(data.val, prep)
    say(f"loaded {len(x_train)} train / {len(x_val)} val images at {prep.width}x{prep.height} "
        f"({time.monotonic() - t0:.0f} s)")
    net, rebuilt, bn_count = _rebuild(base, data, base_prep, say)
    if settings.new_head:
        net.fc = nn.Linear(net.fc.in_features, len(names))  # the base's classes dropped, its backbone kept
        say(f"new head: {len(names)} classes ({', '.join(names)}) instead of the base's {len(base.names)}")
    norm = prep.normalisation
    val_tensor = torch.from_numpy(to_tensor(x_val, norm))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    opt = make_optimizer(net, "adamw", settings.lr, settings.weight_decay)
    steps_per_epoch = max(1, len(train_ids) // settings.batch)
    rng = np.random.default_rng(settings.seed)
    history: list[EpochRow] = []
    started = time.monotonic()
    step = 0
    for epoch in range(1, settings.epochs + 1):
        if settings.time_h is not None and history and time.monotonic() - started >= settings.time_h * 3600:
            say(f"--time {settings.time_h:g} h spent after {len(history)} epoch(s)")
            break
        loss, acc, step = run_epoch(net, opt, loss_fn, x_train, train_ids, settings.batch, rng, settings.shift, norm,
                                    lambda s: lr_at(s, steps_per_epoch, settings.epochs, settings.lr), step,
                                    freeze_batchnorm=True)
        val_acc, val_loss = evaluate_torch(net, val_tensor, torch.from_numpy(val_ids), loss_fn)
        row = EpochRow(epoch=epoch, epochs=settings.epochs, losses={"train": loss},
                       metrics={"loss": val_loss, "accuracy": val_acc}, elapsed_s=time.monotonic() - started)
        history.append(row)
        on_epoch(row)
    train_s = time.monotonic() - started
    target = work / f"{base.name}.onnx"
    export_classifier(net, target, (prep.height, prep.width), _export_metadata(base, settings, rebuilt, prep, names),
                      to_tensor(x_val[:4], norm))
    return TrainedModel(onnx=target, history=tuple(history), train_seconds=train_s,
                        settings=_settings_record(settings, prep),
                        details=_details(base, rebuilt, prep, bn_count, torch.__version__,
                                         torchvision.__version__))


def _deterministic(torch: Any, settings: ClassifierSettings) -> None:
    """Seeded, with the given threads, deterministic kernels: the same data and seed give the same model."""
    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    torch.use_deterministic_algorithms(True)


def _rebuild(base: BaseModel, data: TrainingData, base_prep: InputPrep,
             say: Callable[[str], None]) -> tuple[Any, dict[str, Any], int]:
    """The base's network rebuilt in torch, its BatchNorms re-estimated on the first training images:
    (network, what was rebuilt, images used)."""
    from agent.tooling.training.onnx_to_resnet import resnet_from_onnx
    from agent.tooling.training.resnet import load_images, to_tensor

    bn_frames = load_images(data.train[:BN_IMAGES], base_prep)
    bn_inputs = [t[None] for t in to_tensor(bn_frames, base_prep.normalisation)]
    net, rebuilt = resnet_from_onnx(base.path, bn_inputs, INT8_TOLERANCE if base.quantized else FP32_TOLERANCE)
    say(f"rebuilt the width-{rebuilt['width']} ResNet-18 layout from {base.path.name}: probabilities within "
        f"{rebuilt['mean_probability_difference']:.1e} of the ONNX model, top-1 agrees on "
        f"{100 * rebuilt['top1_agreement']:.0f}% of {min(16, len(bn_inputs))} frames")
    return net, rebuilt, len(bn_inputs)


def _export_metadata(base: BaseModel, settings: ClassifierSettings, rebuilt: dict[str, Any], prep: InputPrep,
                     names: tuple[str, ...]) -> dict[str, str]:
    """The exported ONNX's metadata: the base's carried keys, then what describes the new model."""
    meta = {k: v for k, v in base.metadata.items() if k in CARRIED_KEYS}
    meta.update({
        "description": f"edge-agent frame classifier, ResNet-18 layout at width {rebuilt['width']}, "
                       + (f"new head for {', '.join(names)} on the backbone of " if settings.new_head
                          else "fine-tuned from ") + base.path.name,
        "author": "edge-agent (edge-agent models train)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "imgsz": repr([prep.height, prep.width]),
        "names": repr(dict(enumerate(names))),
    })
    return meta


def _settings_record(settings: ClassifierSettings, prep: InputPrep) -> dict[str, Any]:
    return {
        "epochs": settings.epochs, "imgsz": f"{prep.height}x{prep.width}", "batch": settings.batch,
        "optimizer": "AdamW", "lr": settings.lr, "weight_decay": settings.weight_decay,
        "label_smoothing": settings.label_smoothing, "shift": settings.shift, "seed": settings.seed,
        "threads": settings.threads, "time_h": settings.time_h, "new_head": settings.new_head,
    }


def _details(base: BaseModel, rebuilt: dict[str, Any], prep: InputPrep, bn_images: int, torch_version: str,
             torchvision_version: str) -> dict[str, Any]:
    return {
        "architecture": f"ResNet-18 layout at width {rebuilt['width']} ({rebuilt['params'] / 1e6:.2f} M parameters, "
                        f"{'average and max' if rebuilt['pool'] == 'avgmax' else 'average'} pooled head)",
        "init": f"rebuilt from {base.path.name} (BatchNorms re-estimated on {bn_images} training images; "
                f"probabilities within {rebuilt['mean_probability_difference']:.1e} of the ONNX model)",
        "input": [prep.height, prep.width],
        "tools": f"torch {torch_version}, torchvision {torchvision_version}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
