"""Rebuild the frame classifier (``resnet.build_net``) from its exported ONNX file, FP32 or INT8 QDQ.

The export folds every BatchNorm into its convolution and names the weights ``onnx::Conv_N``,
so the network is recovered from the graph: the first convolution's width, the linear layer's
classes and input size (global average pool, or average and max concatenated); the convolutions
are matched to the network's in forward order, shape by shape; BatchNorms are re-created from
real frames (``batchnorm``). A classifier of another architecture is refused. Needs the train extra.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.errors import ModelError
from agent.training.batchnorm import load_fused, recreate_batchnorms
from agent.training.onnx_weights import float_weights

EXPECTED = ("the frame classifier of scripts/train_classifier.py (ResNet-18 layout: a 7x7 stem, 4 stages of 2 "
            "BasicBlocks, global pooling, one linear layer)")


def _architecture(convs: list[tuple[np.ndarray, np.ndarray]], fc: np.ndarray, where: pathlib.Path) -> tuple[int, str]:
    if not convs or convs[0][0].shape[1:] != (3, 7, 7):
        raise ModelError(f"{where}: the first convolution is not a 7x7 over 3 channels; expected {EXPECTED}")
    width = int(convs[0][0].shape[0])
    pool = {8 * width: "avg", 16 * width: "avgmax"}.get(int(fc.shape[1]))
    if pool is None:
        raise ModelError(f"{where}: the linear layer takes {fc.shape[1]} features; a width-{width} ResNet-18 head "
                         f"takes {8 * width} (average pool) or {16 * width} (average and max); expected {EXPECTED}")
    return width, pool


def resnet_from_onnx(onnx_path: pathlib.Path, images: Sequence[np.ndarray],
                     tolerance: float) -> tuple[Any, dict[str, Any]]:
    """The trainable network and what was rebuilt. ``images``: prepared frames (1x3xHxW float32).
    ``tolerance``: largest mean absolute probability difference from the ONNX model accepted."""
    import onnx
    import onnxruntime as ort
    import torch

    model = onnx.load(str(onnx_path))
    weights = float_weights(model, onnx_path)
    convs: list[tuple[np.ndarray, np.ndarray]] = []
    linear: list[tuple[np.ndarray, np.ndarray, bool]] = []
    for node in model.graph.node:
        inputs = list(node.input)
        if node.op_type == "Conv":
            if len(inputs) < 3 or inputs[1] not in weights or inputs[2] not in weights:
                raise ModelError(f"{onnx_path}: convolution {node.name!r} has no constant weight and bias; "
                                 f"expected {EXPECTED}")
            convs.append((weights[inputs[1]], weights[inputs[2]]))
        elif node.op_type in ("Gemm", "MatMul"):
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            w = weights.get(inputs[1])
            b = weights.get(inputs[2]) if len(inputs) > 2 else None
            if w is None or b is None:
                raise ModelError(f"{onnx_path}: linear layer {node.name!r} has no constant weight and bias; "
                                 f"expected {EXPECTED}")
            linear.append((w if trans_b else w.T, b, trans_b))
    if len(linear) != 1:
        raise ModelError(f"{onnx_path}: {len(linear)} linear layers; expected {EXPECTED}")
    fc_w, fc_b, _ = linear[0]
    width, pool = _architecture(convs, fc_w, onnx_path)

    from agent.training.resnet import build_net, conv_bn_pairs

    net = build_net(width, int(fc_w.shape[0]), pool)
    pairs = conv_bn_pairs(net)
    if len(pairs) != len(convs):
        raise ModelError(f"{onnx_path}: {len(convs)} convolutions, a ResNet-18 layout has {len(pairs)}; "
                         f"expected {EXPECTED}")
    for i, ((conv, bn), (w, b)) in enumerate(zip(pairs, convs, strict=True)):
        if tuple(conv.weight.shape) != w.shape:
            raise ModelError(f"{onnx_path}: convolution {i + 1} has shape {w.shape}, the width-{width} ResNet-18 "
                             f"layout has {tuple(conv.weight.shape)} there; expected {EXPECTED}")
        load_fused(conv, bn, w, b)
    with torch.no_grad():
        net.fc.weight.copy_(torch.from_numpy(np.array(fc_w, dtype=np.float32)))
        net.fc.bias.copy_(torch.from_numpy(np.array(fc_b, dtype=np.float32)))
    recreate_batchnorms(net, pairs, images)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    diffs, agree = [], 0
    net.eval()
    with torch.no_grad():
        for image in list(images)[:16]:
            x = np.asarray(image, dtype=np.float32)
            ours = torch.softmax(net(torch.from_numpy(x)), 1).numpy()
            theirs = session.run(None, {session.get_inputs()[0].name: x})[0]
            diffs.append(float(np.abs(ours - theirs).mean()))
            agree += int(ours.argmax() == theirs.argmax())
    mean_diff = float(np.mean(diffs))
    if mean_diff > tolerance:
        raise ModelError(f"{onnx_path}: the rebuilt network does not reproduce the ONNX output (mean probability "
                         f"difference {mean_diff:.3g}, limit {tolerance:g}); expected {EXPECTED}")
    return net, {"width": width, "pool": pool, "mean_probability_difference": mean_diff,
                 "top1_agreement": agree / max(1, len(diffs)),
                 "params": sum(p.numel() for p in net.parameters())}
