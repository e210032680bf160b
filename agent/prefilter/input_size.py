"""The detector's input size (``model.input_size``): a fixed-shape YOLOv8 graph rewritten for another H x W. Pure logic.

A YOLOv8 detector exported at 320x320 sees a 1280x960 frame as a 320x240 picture and 80 rows of grey: a
fifth of the model's work goes into padding (two fifths for a 16:9 camera). ultralytics' own predictor
avoids that where the model allows it (its "rect" letterbox pads only to a multiple of the stride), and a
convolutional network allows it: only the input's dims and the Detect head's constants depend on the size.

:func:`resize_detector_input` rewrites, in memory, those parts of an exported graph (FP32, or our Q/DQ
INT8, where a constant may sit behind a ``DequantizeLinear``):

- the input's height and width, and the output's anchor count;
- the anchor points, ``(1, 2, anchors)``: the grid cell centres of every stride, x fastest, as ultralytics'
  ``make_anchors`` builds them (:func:`make_anchors`), and the strides ``(1, anchors)``;
- every Reshape target that carries the anchor count (YOLOv8's ``(1, 4, 16, 2100)`` and ``(1, 4, 2100)``).

It first checks that the graph's anchor and stride constants are what :func:`make_anchors` gives at the
exported size: a graph laid out some other way is refused (:class:`InputSizeError`), never guessed at.
At the exported size the rewrite gives the same graph function, bit for bit (tests prove it).

:func:`fitted_size` is what ``input_size: auto`` asks for a frame: the model's long side kept, the short
side padded only up to a multiple of the largest stride (1280x960 -> 256x320, 1920x1080 -> 192x320 for a
320x320 model), the same scale as the square letterbox, so boxes come out the same.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["STRIDES", "InputSizeError", "fitted_size", "make_anchors", "resize_detector_input"]

STRIDES = (8, 16, 32)  # YOLOv8's detection strides (P3, P4, P5)


class InputSizeError(ValueError):
    """The graph cannot be given another input size (its layout is not the one this rewrite knows)."""


def make_anchors(height: int, width: int, strides: tuple[int, ...] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """(anchor points (2, N) in grid units, strides (1, N)) for an input ``height`` x ``width``: the cell centres
    (index + 0.5) of each stride's grid, row by row (x fastest), as ultralytics' ``make_anchors`` does."""
    points, scales = [], []
    for s in strides:
        h, w = math.ceil(height / s), math.ceil(width / s)
        sy, sx = np.meshgrid(np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5,
                             indexing="ij")
        points.append(np.stack((sx, sy), -1).reshape(-1, 2))
        scales.append(np.full((h * w,), s, np.float32))
    return np.concatenate(points).T.copy(), np.concatenate(scales)[None, :]


def fitted_size(src_w: int, src_h: int, model_w: int, model_h: int, stride: int = STRIDES[-1]) -> tuple[int, int]:
    """The (height, width) ``input_size: auto`` runs a ``src_w`` x ``src_h`` frame at: the letterbox scale of the
    model's own size, each side padded only up to a multiple of ``stride`` (never more than the model's side)."""
    r = min(model_h / src_h, model_w / src_w)
    new_w, new_h = int(round(src_w * r)), int(round(src_h * r))
    return (min(model_h, max(stride, math.ceil(new_h / stride) * stride)),
            min(model_w, max(stride, math.ceil(new_w / stride) * stride)))


class _Constants:
    """The graph's constant tensors by name (initializers, Constant nodes, and DequantizeLinear of an
    initializer, read as its dequantized value), and a way to replace one with a plain float/int initializer."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.values: dict[str, np.ndarray] = {n: numpy_helper.to_array(t) for n, t in self.inits.items()}
        self.producer: dict[str, Any] = {}
        self.orphans: set[str] = set()  # initializers that fed a removed node
        for node in graph.node:
            if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
                self.values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
                self.producer[node.output[0]] = node
            elif node.op_type == "DequantizeLinear" and all(i in self.inits for i in node.input if i):
                x = self.values[node.input[0]].astype(np.float32)
                scale = self.values[node.input[1]].astype(np.float32)
                zero = self.values[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else 0
                if np.ndim(scale) == 0:  # per-tensor only: a per-axis one is a weight, never an anchor
                    self.values[node.output[0]] = (x - zero) * scale
                    self.producer[node.output[0]] = node

    def replace(self, name: str, value: np.ndarray) -> None:
        """``name`` now holds ``value`` (a node that made it is removed; its own inputs stay for others)."""
        from onnx import numpy_helper

        node = self.producer.pop(name, None)
        if node is not None:
            self.graph.node.remove(node)
            self.orphans.update(i for i in node.input if i in self.inits)
        tensor = numpy_helper.from_array(value, name)
        if name in self.inits:
            self.inits[name].CopyFrom(tensor)
        else:
            self.graph.initializer.append(tensor)
            self.inits[name] = self.graph.initializer[-1]
        self.values[name] = value


def _head_constants(model: Any, old_h: int, old_w: int) -> tuple[list[str], list[str], list[str]]:
    """(anchor point, stride, reshape target) constants of the Detect head; InputSizeError when a constant that
    carries the anchor count is none of these or does not hold what make_anchors gives."""
    consts = _Constants(model.graph)
    anchors, strides = make_anchors(old_h, old_w)
    count = anchors.shape[1]
    reshape_targets = {n.input[1] for n in model.graph.node if n.op_type == "Reshape" and len(n.input) > 1}
    behind = {i for node in consts.producer.values() if node.op_type == "DequantizeLinear" for i in node.input}
    points, scales, targets = [], [], []
    for name, value in consts.values.items():
        if name in behind:
            continue  # read through the DequantizeLinear's output
        if name in reshape_targets and value.ndim == 1 and value.dtype.kind == "i":
            if count in value.tolist():
                targets.append(name)
            continue
        if count not in value.shape:
            continue
        if value.shape in ((1, 2, count), (2, count)) and _close(value.reshape(2, count), anchors, consts, name):
            points.append(name)
        elif value.shape in ((1, count), (count,)) and _close(value.reshape(1, count), strides, consts, name):
            scales.append(name)
        else:
            raise InputSizeError(f"constant {name!r} of shape {list(value.shape)} carries the anchor count {count} "
                                 "but is neither YOLOv8's anchor points nor its strides at "
                                 f"{old_w}x{old_h} (strides {STRIDES})")
    if not points or not scales:
        raise InputSizeError(f"no anchor points (1, 2, {count}) and strides (1, {count}) as YOLOv8's Detect head "
                             f"makes them at {old_w}x{old_h} were found in the graph")
    return points, scales, targets


def _close(value: np.ndarray, expected: np.ndarray, consts: _Constants, name: str) -> bool:
    """Exactly equal for a float constant; within half a quantization step behind a DequantizeLinear."""
    node = consts.producer.get(name)
    if node is not None and node.op_type == "DequantizeLinear":
        step = float(consts.values[node.input[1]])
        return bool(np.allclose(value, expected, rtol=0, atol=step / 2 + 1e-6))
    return bool(np.array_equal(value.astype(np.float32), expected))


def resize_detector_input(model: Any, height: int, width: int) -> None:
    """Give ``model`` (a fixed-shape YOLOv8 detector's onnx ModelProto, changed in place) the input size
    ``height`` x ``width`` (multiples of 32). InputSizeError (nothing changed) when the graph's layout is not
    the one this rewrite knows: an input other than (1, 3, H, W) of fixed size, a head whose constants are not
    make_anchors' layout, or a size-dependent Resize."""
    if height <= 0 or width <= 0 or height % STRIDES[-1] or width % STRIDES[-1]:
        raise InputSizeError(f"input size {height}x{width} (HxW): each side must be a positive multiple of "
                             f"{STRIDES[-1]}")
    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim if len(graph.input) == 1 else []
    if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims) or dims[1].dim_value != 3:
        raise InputSizeError("expected one image input (1, 3, H, W) of fixed size")
    old_h, old_w = dims[2].dim_value, dims[3].dim_value
    if old_h % STRIDES[-1] or old_w % STRIDES[-1]:
        raise InputSizeError(f"the exported input {old_h}x{old_w} is not a multiple of {STRIDES[-1]}")
    if any(n.op_type == "Resize" and len(n.input) > 3 and n.input[3] for n in graph.node):
        raise InputSizeError("a Resize node with a fixed output size (the neck must upsample by scale)")
    points, scales, targets = _head_constants(model, old_h, old_w)
    consts = _Constants(graph)
    anchors, strides = make_anchors(height, width)
    old_count, count = make_anchors(old_h, old_w)[0].shape[1], anchors.shape[1]
    for name in points:
        consts.replace(name, anchors.reshape(consts.values[name].shape[:-1] + (count,)))
    for name in scales:
        consts.replace(name, strides.reshape(consts.values[name].shape[:-1] + (count,)))
    for name in targets:
        value = consts.values[name]
        consts.replace(name, np.where(value == old_count, count, value).astype(value.dtype))
    dims[2].dim_value, dims[3].dim_value = height, width
    for out in graph.output:
        for d in out.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value == old_count:
                d.dim_value = count
    used = {i for node in graph.node for i in node.input}
    for name in consts.orphans - used:
        graph.initializer.remove(consts.inits[name])  # what fed a replaced DequantizeLinear
    del graph.value_info[:]  # shapes inferred at the old size


def load_resized(path: Any, input_size: tuple[int, int]) -> Any:
    """The ONNX file ``path`` as a ModelProto rewritten for ``input_size`` (height, width); ModelError naming the
    file, the size and what was expected when it cannot be."""
    import onnx

    from agent.errors import ModelError

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError/OSError/... for a file it cannot read
        raise ModelError(f"model file {path} could not be read as ONNX to give it the input size "
                         f"{input_size[0]}x{input_size[1]}: {str(exc).strip()[:200]}") from None
    try:
        resize_detector_input(proto, *input_size)
    except InputSizeError as exc:
        raise ModelError(f"model file {path} cannot run at model.input_size {input_size[0]}x{input_size[1]} "
                         f"(HxW): {exc}; expected a fixed-shape YOLOv8 detector export (or use input_size: "
                         "square)") from None
    return proto
