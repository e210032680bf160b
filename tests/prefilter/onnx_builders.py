"""Tiny real ONNX models with a known output, built with onnx.helper for tests."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def constant_output_model(
    path: pathlib.Path,
    output: np.ndarray,
    *,
    input_shape: tuple[int | str, ...] = (1, 3, 32, 32),
    metadata: dict[str, str] | None = None,
) -> pathlib.Path:
    """A model whose output is ``output`` (+ 0 * mean(input)), so ORT really runs it."""
    const = numpy_helper.from_array(output.astype(np.float32), "const_out")
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["m0"]),
        helper.make_node("Add", ["const_out", "m0"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "fake",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        initializer=[const, numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.save(model, str(path))
    return path


def yolo_output(detections: list[tuple[float, float, float, float, int, float]], nc: int, anchors: int) -> np.ndarray:
    """(1, 4 + nc, anchors) with the given (cx, cy, w, h, class, score) in the first anchors."""
    out = np.zeros((1, 4 + nc, anchors), np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(detections):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + cls, i] = score
    return out


def brightness_anomaly_model(path: pathlib.Path, height: int = 64, width: int = 64, *,
                             metadata: dict[str, str] | None = None,
                             outputs: tuple[str, str] = ("anomaly_map", "score")) -> pathlib.Path:
    """An anomaly model whose map is the input's brightness: mean over channels, 4x4 average pooled (so the
    map is (1, 1, height/4, width/4)), and whose score is the map's largest cell. With the identity
    normalisation (values 0..1) a white square on a black frame is an anomaly of score 1 where it is."""
    nodes = [
        helper.make_node("ReduceMean", ["images", "channel_axis"], ["grey"], keepdims=1),
        helper.make_node("AveragePool", ["grey"], [outputs[0]], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("ReduceMax", [outputs[0]], ["peak"], keepdims=0),
        helper.make_node("Reshape", ["peak", "one"], [outputs[1]]),
    ]
    graph = helper.make_graph(
        nodes, "brightness-anomaly",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info(outputs[0], TensorProto.FLOAT, [1, 1, height // 4, width // 4]),
         helper.make_tensor_value_info(outputs[1], TensorProto.FLOAT, [1])],
        initializer=[numpy_helper.from_array(np.array([1], np.int64), "channel_axis"),
                     numpy_helper.from_array(np.array([1], np.int64), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    meta = {"task": "anomaly", "threshold": "0.5", "resize": "stretch", "imgsz": f"[{height}, {width}]"}
    meta.update(metadata or {})
    for k, v in meta.items():
        if v:  # an empty value leaves the key out
            model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.save(model, str(path))
    return path
