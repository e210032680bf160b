"""Rebuild the frame classifier (``resnet.build_net``) from its exported ONNX file, FP32 or INT8 QDQ.

The export folds every BatchNorm into its convolution and names the weights ``onnx::Conv_N``,
so the network is recovered from the graph: the first convolution's width, the linear layer's
classes and input size (global average pool, or average and max concatenated); the convolutions
are matched to the network's in forward order, shape by shape; BatchNorms are re-created from
real frames (``batchnorm``). A classifier of another architecture is refused. Needs the train extra.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.errors import ModelError
from agent.tooling.training.batchnorm import load_fused, recreate_batchnorms
from agent.tooling.training.onnx_weights import float_weights

EXPECTED = ("the frame classifier of scripts/train_classifier.py (ResNet-18 layout: a 7x7 stem, 4 stages of 2 "
            "BasicBlocks, global pooling, one linear layer)")
RESNET18_CONVS = 20  # the stem, 16 in the blocks, 3 downsampling shortcuts


def module_path(node_name: str) -> str:
    """The torch module an exported node came from: ``/net/layer2/layer2.0/downsample/downsample.0/Conv`` ->
    ``layer2.0.downsample.0`` (the export names nodes by module scope; the wrapper's ``net`` is dropped)."""
    parts: list[str] = []
    for segment in node_name.strip("/").split("/")[1:-1]:
        if parts and segment.startswith(parts[-1] + "."):
            parts[-1] = segment
        else:
            parts.append(segment)
    return ".".join(parts)


@dataclasses.dataclass(frozen=True)
class ResnetGraph:
    """The weights of an exported classifier, in graph order, and the architecture they imply."""

    convs: tuple[tuple[np.ndarray, np.ndarray], ...]  # (fused weight, bias) of every convolution
    conv_modules: tuple[str, ...]  # the module each came from (from the node names)
    fc_weight: np.ndarray  # (classes, features)
    fc_bias: np.ndarray
    width: int
    pool: str  # avg | avgmax


def read_resnet_graph(onnx_path: pathlib.Path) -> ResnetGraph:
    """Read and check the exported classifier (onnx only, no torch); ModelError when it is not the
    frame classifier's layout."""
    import onnx

    model = onnx.load(str(onnx_path))
    weights = float_weights(model, onnx_path)
    convs: list[tuple[np.ndarray, np.ndarray]] = []
    conv_names: list[str] = []
    linear: list[tuple[np.ndarray, np.ndarray]] = []
    for node in model.graph.node:
        inputs = list(node.input)
        if node.op_type == "Conv":
            if len(inputs) < 3 or inputs[1] not in weights or inputs[2] not in weights:
                raise ModelError(f"{onnx_path}: convolution {node.name!r} has no constant weight and bias; "
                                 f"expected {EXPECTED}")
            convs.append((weights[inputs[1]], weights[inputs[2]]))
            conv_names.append(module_path(node.name))
        elif node.op_type in ("Gemm", "MatMul"):
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            w = weights.get(inputs[1])
            b = weights.get(inputs[2]) if len(inputs) > 2 else None
            if w is None or b is None:
                raise ModelError(f"{onnx_path}: linear layer {node.name!r} has no constant weight and bias; "
                                 f"expected {EXPECTED}")
            linear.append((w if trans_b else w.T, b))
    if len(linear) != 1:
        raise ModelError(f"{onnx_path}: {len(linear)} linear layers; expected {EXPECTED}")
    fc_w, fc_b = linear[0]
    if not convs or convs[0][0].shape[1:] != (3, 7, 7):
        raise ModelError(f"{onnx_path}: the first convolution is not a 7x7 over 3 channels; expected {EXPECTED}")
    width = int(convs[0][0].shape[0])
    pool = {8 * width: "avg", 16 * width: "avgmax"}.get(int(fc_w.shape[1]))
    if pool is None:
        raise ModelError(f"{onnx_path}: the linear layer takes {fc_w.shape[1]} features; a width-{width} ResNet-18 "
                         f"head takes {8 * width} (average pool) or {16 * width} (average and max); expected "
                         f"{EXPECTED}")
    if len(convs) != RESNET18_CONVS:
        raise ModelError(f"{onnx_path}: {len(convs)} convolutions, a ResNet-18 layout has {RESNET18_CONVS}; "
                         f"expected {EXPECTED}")
    return ResnetGraph(convs=tuple(convs), conv_modules=tuple(conv_names), fc_weight=fc_w, fc_bias=fc_b,
                       width=width, pool=pool)


def resnet_from_onnx(onnx_path: pathlib.Path, images: Sequence[np.ndarray],
                     tolerance: float) -> tuple[Any, dict[str, Any]]:
    """The trainable network and what was rebuilt. ``images``: prepared frames (1x3xHxW float32).
    ``tolerance``: largest mean absolute probability difference from the ONNX model accepted."""
    import onnxruntime as ort
    import torch

    graph = read_resnet_graph(onnx_path)
    convs, conv_names, fc_w, fc_b = list(graph.convs), list(graph.conv_modules), graph.fc_weight, graph.fc_bias
    width, pool = graph.width, graph.pool

    from agent.tooling.training.resnet import build_net, conv_bn_pairs

    net = build_net(width, int(fc_w.shape[0]), pool)
    pairs = conv_bn_pairs(net)
    by_path = {name: module for name, module in net.named_modules()}
    bn_of = {id(conv): bn for conv, bn in pairs}
    if all(id(by_path.get(p)) in bn_of for p in conv_names) and len(set(conv_names)) == len(pairs):
        pairs = [(by_path[p], bn_of[id(by_path[p])]) for p in conv_names]  # the graph's order, by module name
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
