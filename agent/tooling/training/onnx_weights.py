"""The float weights of an ONNX file, by initializer name, with INT8 QDQ weights dequantized.

``edge-agent models quantize`` stores a weight ``W`` as ``W_quantized`` (int8), ``W_scale`` and
``W_zero_point`` feeding a DequantizeLinear node (per channel along ``axis``); the float weight the
network computes with is ``(W_quantized - W_zero_point) * W_scale``. Fine-tuning starts from
exactly that, under the weight's original name. Needs ``onnx`` (the train extra).
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from agent.errors import ModelError

_QUANTIZED_SUFFIX = "_quantized"


def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    values = q.astype(np.float64)
    if zero_point is not None:
        values = values - _along(zero_point.astype(np.float64), axis, values.ndim)
    out: np.ndarray = (values * _along(scale.astype(np.float64), axis, values.ndim)).astype(np.float32)
    return out


def _along(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-tensor (scalar) or per-channel (1-D) parameter shaped to broadcast along ``axis``."""
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis] = v.size
    return v.reshape(shape)


def float_weights(model: Any, where: pathlib.Path | str) -> dict[str, np.ndarray]:
    """``model`` (an ``onnx.ModelProto``) -> {weight name: float32 array}. Plain float initializers as they
    are; each DequantizeLinear of an initializer gives the dequantized tensor, named without ``_quantized``."""
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {name: value for name, value in init.items() if value.dtype.kind == "f"}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in init:
            continue
        q_name = node.input[0]
        try:
            scale = init[node.input[1]]
            zero = init[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        except KeyError as exc:
            raise ModelError(f"{where}: DequantizeLinear {node.name!r} has a scale or zero point that is not a "
                             "constant; expected a static QDQ model from edge-agent models quantize") from exc
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        name = q_name[: -len(_QUANTIZED_SUFFIX)] if q_name.endswith(_QUANTIZED_SUFFIX) else q_name
        out[name] = _dequantize(init[q_name], scale, zero, axis)
        out[node.output[0]] = out[name]  # the name the consuming Conv/Gemm reads
    return out
