"""Rebuild trainable ultralytics weights from an exported YOLOv8 ONNX detector (FP32 or INT8 QDQ).

Ultralytics' export fuses every Conv+BatchNorm pair into one convolution with a bias, so the ONNX
file keeps the function but not the split. To fine-tune a shipped model whose ``.pt`` is gone, the
fused weights go back into the same architecture (``model.N...conv.weight`` are the state-dict names)
and each BatchNorm is re-created from real images (``agent.tooling.training.batchnorm``). An INT8 QDQ file
gives its dequantized weights. Needs the train extra.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.errors import ModelError
from agent.tooling.training.batchnorm import load_fused, recreate_batchnorms
from agent.tooling.training.onnx_weights import float_weights
from agent.tooling.training.yolo_arch import model_yaml, read_yolo_architecture

_WEIGHT_NAME = re.compile(r"^model\.\d+\..*\.(weight|bias)$")
_DFL = "model.22.dfl"  # the head's fixed distribution-to-box convolution: not trained


def _need(weights: dict[str, np.ndarray], key: str, where: pathlib.Path) -> np.ndarray:
    if key not in weights:
        raise ModelError(f"{where}: no tensor {key!r}; expected a YOLOv8 export of the same architecture "
                         "(activation, scale, class count)")
    return weights[key]


def load_onnx_into(model: Any, onnx_path: pathlib.Path, images: Sequence[np.ndarray]) -> dict[str, float]:
    """Fill ``model`` (an ultralytics DetectionModel of the same architecture) from ``onnx_path``.

    ``images`` are network inputs, 1x3xHxW float32 in 0..1 (letterboxed like training). Returns how far
    the model's output is from the ONNX model's on the first image, relative to the output's largest
    value: ``max_abs_diff_fused`` with identity BatchNorms, ``max_abs_diff_rebuilt`` after re-creating them.
    """
    import onnx
    import onnxruntime as ort
    import torch

    onnx_model = onnx.load(str(onnx_path))
    weights = float_weights(onnx_model, onnx_path)
    pairs: list[tuple[Any, Any]] = []
    loaded = 0
    paired: set[int] = set()
    with torch.no_grad():
        for name, module in model.named_modules():
            conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                load_fused(conv, bn, _need(weights, f"{name}.conv.weight", onnx_path),
                           _need(weights, f"{name}.conv.bias", onnx_path))
                pairs.append((conv, bn))
                paired.add(id(conv))
                loaded += 2
            elif isinstance(module, torch.nn.Conv2d) and id(module) not in paired and not name.startswith(_DFL):
                w = _need(weights, f"{name}.weight", onnx_path)  # the head's last 1x1 convolutions
                if tuple(module.weight.shape) != w.shape:
                    raise ModelError(f"{onnx_path}: {name}.weight has shape {w.shape}, the model expects "
                                     f"{tuple(module.weight.shape)}; a different class count or architecture")
                module.weight.copy_(torch.from_numpy(np.array(w, dtype=np.float32)))
                loaded += 1
                if module.bias is not None:
                    module.bias.copy_(torch.from_numpy(np.array(_need(weights, f"{name}.bias",
                                                                                  onnx_path))))
                    loaded += 1
    expected = sum(1 for k in weights if _WEIGHT_NAME.match(k) and not k.startswith(_DFL))
    if loaded != expected:
        raise ModelError(f"{onnx_path}: loaded {loaded} of its {expected} weight tensors into the model; expected "
                         "the same YOLOv8 architecture (activation, scale, class count) as the ONNX file")
    if not images:
        raise ModelError("no images to re-create the BatchNorm statistics from")
    reference = np.asarray(images[0], dtype=np.float32)
    model.eval()
    with torch.no_grad():
        before = model(torch.from_numpy(reference))[0].numpy()
    recreate_batchnorms(model, pairs, images)
    with torch.no_grad():
        after = model(torch.from_numpy(reference))[0].numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: reference})[0]
    scale = float(np.abs(onnx_out).max()) or 1.0
    return {
        "max_abs_diff_fused": float(np.abs(before - onnx_out).max()) / scale,
        "max_abs_diff_rebuilt": float(np.abs(after - onnx_out).max()) / scale,
    }


def yolo_from_onnx(onnx_path: pathlib.Path, nc: int, work: pathlib.Path, images: Sequence[np.ndarray],
                   tolerance: float) -> tuple[pathlib.Path, dict[str, Any]]:
    """A trainable checkpoint ``work/init.pt`` (and its ``work/yolov8*.yaml``) rebuilt from ``onnx_path``.

    ``tolerance``: the largest relative output difference from the ONNX model accepted (1e-3 for an FP32
    file; an INT8 file's own rounding makes it larger). Returns the checkpoint path and what was rebuilt.
    """
    import torch
    from ultralytics import YOLO  # type: ignore[attr-defined]

    scale, activation = read_yolo_architecture(onnx_path)
    yaml_path = work / f"yolov8{scale}-{activation}.yaml"
    yaml_path.write_text(model_yaml(nc, activation, scale))
    net: Any = YOLO(str(yaml_path), task="detect").model
    check = load_onnx_into(net, onnx_path, images)
    if check["max_abs_diff_rebuilt"] > tolerance:
        raise ModelError(f"{onnx_path}: the rebuilt YOLOv8{scale} ({activation}) does not reproduce the ONNX output "
                         f"(max relative difference {check['max_abs_diff_rebuilt']:.3g}, limit {tolerance:g}); "
                         "expected a YOLOv8-layout export by ultralytics")
    checkpoint = work / "init.pt"
    torch.save({"model": net.float(), "train_args": {}}, checkpoint)
    return checkpoint, {"scale": scale, "activation": activation, "yaml": yaml_path.name,
                        "max_relative_difference": check["max_abs_diff_rebuilt"]}
