"""INT8 quantization: which nodes stay FP32, and a real quantization of the shipped detector."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agent.capture.synthetic import render_still
from agent.config.models import DEFAULT_MODEL, ModelConfig
from agent.errors import ModelError
from agent.prefilter.detector import YoloDetector
from agent.prefilter.gate_record import file_precision
from agent.tooling.quantize.int8 import FLAVOURS, METADATA_KEY, decode_nodes, flavours_from_option, quantize_model


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], out_shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _w(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(0).normal(size=shape).astype(np.float32), name)


def test_decode_of_the_shipped_yolov8_head_is_everything_after_its_last_convs() -> None:
    decode = decode_nodes(onnx.load(str(DEFAULT_MODEL)))
    assert all(n.startswith("/model.22/") for n in decode)  # only the Detect module
    # the final concat of pixel boxes and 0..1 scores, the score sigmoid and the DFL (softmax + fixed conv)
    for name in ("/model.22/Concat_3", "/model.22/Sigmoid", "/model.22/dfl/Softmax", "/model.22/dfl/conv/Conv"):
        assert name in decode
    # the head's learned convolutions are quantized
    assert not [n for n in decode if "/cv2." in n or "/cv3." in n]


def test_decode_of_a_classifier_is_its_softmax() -> None:
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["out"], name="softmax", axis=1),
    ]
    model = _model(nodes, [_w("w", (4, 3, 3, 3)), _w("fc", (5, 4)), _w("b", (5,))], [1, 5])
    assert decode_nodes(model) == ["softmax"]


def test_silu_sigmoids_are_activations_not_probabilities() -> None:
    nodes = [
        helper.make_node("Conv", ["images", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s"], name="sig"),
        helper.make_node("Mul", ["c1", "s"], ["a"], name="silu"),
        helper.make_node("Conv", ["a", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c2", "shape"], ["out"], name="reshape"),
    ]
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    model = _model(nodes, [_w("w1", (4, 3, 3, 3)), _w("w2", (2, 4, 3, 3)), shape], [1, 128])
    assert decode_nodes(model) == ["reshape"]  # conv2 is a learned layer fed by a SiLU, so it is quantized


def test_flavour_option() -> None:
    assert [f.name for f in flavours_from_option("both")] == ["cpu", "tensorrt"]
    assert FLAVOURS["tensorrt"].symmetric_activations and FLAVOURS["tensorrt"].activations == "int8"
    assert FLAVOURS["cpu"].output_path(pathlib.Path("m/x.onnx")) == pathlib.Path("m/x.int8.onnx")
    with pytest.raises(ModelError, match="expected cpu, tensorrt or both"):
        flavours_from_option("fp16")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(1234)
    return [render_still(rng)[0] for _ in range(12)]


@pytest.fixture(scope="module")
def quantized(quantized_model: pathlib.Path) -> pathlib.Path:
    return quantized_model


def test_quantize_report(tmp_path: pathlib.Path, frames: list[np.ndarray]) -> None:
    fp32 = YoloDetector.from_file(DEFAULT_MODEL)
    tensors = (fp32.preprocess(f)[0].copy() for f in frames[:4])
    seen: list[tuple[int, int]] = []
    report = quantize_model(DEFAULT_MODEL, tmp_path / "q.onnx", FLAVOURS["tensorrt"], fp32.info.input_name, tensors,
                            4, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert report.calibration_frames == 4 and report.quantized_ops["Conv"] >= 60
    assert "/model.22/Concat_3" in report.excluded_nodes
    assert report.metadata["activations"] == "int8 symmetric"


def test_quantized_detector_keeps_metadata_and_finds_what_fp32_finds(
        quantized: pathlib.Path, frames: list[np.ndarray]) -> None:
    model = onnx.load(str(quantized))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["task"] == "detect" and "scratch" in meta["names"]  # ultralytics' metadata survives
    q = json.loads(meta[METADATA_KEY])
    assert q["flavour"] == "cpu" and q["calibration"] == {"method": "MinMax", "frames": 8} and q["decode_kept_float"]
    assert file_precision(quantized) == "int8"
    producers = {o: n for n in model.graph.node for o in n.output}
    final = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    assert all(producers[i].op_type != "DequantizeLinear" for i in final.input)  # the output concat is float

    fp32 = YoloDetector.from_file(DEFAULT_MODEL, ModelConfig(min_score=0.3))
    int8 = YoloDetector.from_file(quantized, ModelConfig(path=quantized, min_score=0.3))
    matched = total = 0
    for frame in frames[8:]:  # frames calibration did not see
        a, b = fp32.detect(frame).detections, int8.detect(frame).detections
        total += len(a)
        for d in a:
            matched += any(e.label == d.label and _iou(d.box, e.box) > 0.7 and abs(e.confidence - d.confidence) < 0.15
                           for e in b)
    assert total > 0 and matched >= 0.8 * total


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_quantizing_a_quantized_model_is_refused(quantized: pathlib.Path, tmp_path: pathlib.Path) -> None:
    with pytest.raises(ModelError, match="already quantized; quantize the FP32 model"):
        quantize_model(quantized, tmp_path / "x.onnx", FLAVOURS["cpu"], "images", iter([]), 0)


def test_a_non_onnx_file_is_refused(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a model")
    with pytest.raises(ModelError, match="is not an ONNX model"):
        quantize_model(bad, tmp_path / "x.onnx", FLAVOURS["cpu"], "images", iter([]), 0)
