"""Rebuild trainable ultralytics weights from an exported YOLOv8 ONNX detector.

Ultralytics' export fuses every Conv+BatchNorm pair into one convolution with a bias, so
the ONNX file keeps the function but not the BatchNorm split. To fine-tune a shipped model
whose ``.pt`` is gone, this puts the fused weights back into the same architecture
(``model.N...conv.weight`` names are the state-dict names) and re-creates each BatchNorm
from the statistics of its convolution's output on real images:

    fused:    y = W x + b
    unfused:  y = gamma (W x - mean) / sqrt(var + eps) + beta
    with mean, var = statistics of W x,  gamma = sqrt(var + eps),  beta = b + mean

which is exactly the fused function in eval mode, and (because the batch statistics are
close to those running statistics) close to it in train mode, so training picks up where
the exported model left off.
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterable
from typing import Any

import numpy as np


def load_onnx_into(model: Any, onnx_path: pathlib.Path, images: Iterable[np.ndarray]) -> dict[str, float]:
    """Fill ``model`` (an ultralytics DetectionModel of the same architecture) from ``onnx_path``.

    ``images`` are network inputs, 1x3xHxW float32 in 0..1 (letterboxed like training).
    Returns how far the rebuilt model's output is from the ONNX model's on the first image.
    """
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(onnx_path)).graph.initializer}
    convs: list[tuple[str, torch.nn.Conv2d, torch.nn.BatchNorm2d]] = []
    loaded = 0
    paired: set[int] = set()
    with torch.no_grad():
        for name, module in model.named_modules():
            conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                w, b = _need(weights, f"{name}.conv.weight"), _need(weights, f"{name}.conv.bias")
                conv.weight.copy_(torch.from_numpy(w.copy()))
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(b.copy()))
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                convs.append((name, conv, bn))
                paired.add(id(conv))
                loaded += 2
            elif (isinstance(module, torch.nn.Conv2d) and id(module) not in paired
                  and not name.endswith("dfl.conv")):  # the head's last 1x1 convs; DFL is fixed
                module.weight.copy_(torch.from_numpy(_need(weights, f"{name}.weight").copy()))
                if module.bias is not None:
                    module.bias.copy_(torch.from_numpy(_need(weights, f"{name}.bias").copy()))
                    loaded += 1
                loaded += 1
    expected = sum(1 for k in weights if k.startswith("model.") and not k.startswith("model.22.dfl"))
    if loaded != expected:
        raise SystemExit(f"{onnx_path}: loaded {loaded} of its {expected} weight tensors into the model; "
                         "expected the same YOLOv8 architecture (activation, class count) as the ONNX file")

    # statistics of every conv output (pre-BatchNorm) over the images, with the exact fused model
    sums: dict[str, list[Any]] = {}
    hooks = []
    for name, conv, _ in convs:
        def hook(_m: Any, _i: Any, out: Any, key: str = name) -> None:
            x = out.detach().double()
            s = sums.setdefault(key, [0.0, 0.0, 0])
            s[0] = s[0] + x.sum(dim=(0, 2, 3))
            s[1] = s[1] + (x * x).sum(dim=(0, 2, 3))
            s[2] += x.shape[0] * x.shape[2] * x.shape[3]
        hooks.append(conv.register_forward_hook(hook))
    model.eval()
    batch = [np.asarray(im, dtype=np.float32) for im in images]
    if not batch:
        raise SystemExit("load_onnx_into: no images to re-create the BatchNorm statistics from")
    with torch.no_grad():
        reference_in = batch[0]
        before = model(torch.from_numpy(reference_in))[0].numpy()
        for im in batch:
            model(torch.from_numpy(im))
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for name, _conv, bn in convs:
            total, total_sq, n = sums[name]
            mean = total / n
            var = (total_sq / n - mean * mean).clamp_min(1e-6)
            bias = bn.bias.detach().double().clone()
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
            bn.weight.copy_(torch.sqrt(var + bn.eps).float())
            bn.bias.copy_((bias + mean).float())
        after = model(torch.from_numpy(reference_in))[0].numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: reference_in})[0]
    scale = float(np.abs(onnx_out).max())
    return {
        "max_abs_diff_fused": float(np.abs(before - onnx_out).max()) / scale,
        "max_abs_diff_rebuilt": float(np.abs(after - onnx_out).max()) / scale,
    }


def _need(weights: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in weights:
        raise SystemExit(f"ONNX file has no tensor {key!r}: expected a YOLOv8 export of the same architecture")
    return weights[key]
