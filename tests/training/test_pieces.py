"""The pure pieces of ``edge-agent models train``: progress lines, the model card's lineage, the YOLOv8
architecture read from a graph, INT8 weights dequantized, exported node names mapped to modules."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from agent.errors import EdgeAgentError, ModelError
from agent.tooling.training.card import detector_class_table, read_earlier_training
from agent.tooling.training.command import parse_imgsz
from agent.tooling.training.onnx_to_resnet import module_path
from agent.tooling.training.onnx_weights import float_weights
from agent.tooling.training.progress import EpochRow, duration
from agent.tooling.training.yolo_arch import detect_architecture, model_yaml

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"),
    (42.4, "42s"),
    (75, "1m15s"),  # minutes and two-digit seconds
    (3600 + 6 * 60 + 40, "1h06m"),  # hours and whole minutes (the 40 s dropped)
])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_an_epoch_line_has_the_epoch_losses_metrics_elapsed_and_eta() -> None:
    row = EpochRow(epoch=2, epochs=5, losses={"box": 1.23456, "cls": 0.5}, metrics={"mAP50": 0.8123},
                   elapsed_s=60.0)
    assert row.eta_s() == 90.0  # 30 s an epoch, 3 to go
    assert row.line() == "epoch 2/5  box 1.2346 cls 0.5000  val mAP50 0.812  elapsed 1m00s  ETA 1m30s"
    assert row.as_json() == {"epoch": 2, "losses": {"box": 1.23456, "cls": 0.5}, "metrics": {"mAP50": 0.8123},
                             "elapsed_s": 60.0}


def test_the_shipped_detector_card_gives_its_lineage() -> None:
    earlier = read_earlier_training((MODELS / "conveyor-yolov8n.md").read_text())
    assert earlier.training.startswith("stage 1: 30 epochs") and "stage 4" in earlier.training
    assert earlier.map50 == pytest.approx(0.929)
    assert earlier.reproduce[0].startswith("python scripts/train_detector.py --train 600")  # after `pip install`
    assert earlier.reproduce[-1].endswith("--init-onnx models/conveyor-yolov8n.onnx")  # not the INT8 section's
    assert read_earlier_training("# a card without a table").training == "unknown earlier training"


def test_detector_class_table() -> None:
    table = detector_class_table({"hole": {"precision": 0.9, "recall": 0.8, "mAP50": 0.85, "mAP50-95": 0.5}})
    assert table == "| hole | 0.900 | 0.800 | 0.850 | 0.500 |"


def test_the_yaml_names_scale_and_activation() -> None:
    text = model_yaml(4, "relu")
    assert "nc: 4" in text and "activation: nn.ReLU()" in text
    assert "scale: n" in text and "n: [0.33, 0.25, 1024]" in text
    with pytest.raises(ModelError, match="expected one of relu, silu"):
        model_yaml(4, "gelu")


def test_the_shipped_detector_is_a_yolov8n_with_relu() -> None:
    graph = onnx.load(str(MODELS / "conveyor-yolov8n.onnx"))
    weights = float_weights(graph, "fp32")
    assert detect_architecture(weights, [n.op_type for n in graph.graph.node], "x") == ("n", "relu")
    stem = weights["model.0.conv.weight"]
    with pytest.raises(ModelError, match="first convolution has 20 channels"):
        detect_architecture({"model.0.conv.weight": np.zeros((20, *stem.shape[1:]), np.float32)}, ["Relu"], "x")
    with pytest.raises(ModelError, match="no tensor 'model.0.conv.weight'"):
        detect_architecture({"onnx::Conv_12": stem}, ["Relu"], "x")  # e.g. a torchvision export
    with pytest.raises(ModelError, match="neither ReLU nor SiLU"):
        detect_architecture({"model.0.conv.weight": stem}, ["Conv", "Tanh"], "x")


def test_int8_weights_come_back_within_half_a_step_of_the_fp32_source() -> None:
    fp32 = float_weights(onnx.load(str(MODELS / "conveyor-yolov8n.onnx")), "fp32")
    int8_graph = onnx.load(str(MODELS / "conveyor-yolov8n.int8.onnx"))  # quantized from that file
    int8 = float_weights(int8_graph, "int8")
    init = {t.name: numpy_helper.to_array(t) for t in int8_graph.graph.initializer}
    name = "model.2.cv1.conv.weight"  # a quantized convolution (per-channel int8 weights)
    assert init[name + "_quantized"].dtype == np.int8
    step = init[name + "_scale"].reshape(-1, 1, 1, 1)
    assert int8[name].dtype == np.float32 and int8[name].shape == fp32[name].shape
    assert np.all(np.abs(int8[name] - fp32[name]) <= step / 2 + 1e-7)
    assert np.array_equal(int8["model.0.conv.weight"], fp32["model.0.conv.weight"])  # the stem stayed FP32
    assert np.abs(int8["model.2.cv1.conv.bias"] - fp32["model.2.cv1.conv.bias"]).max() < 1e-3


@pytest.mark.parametrize(("node", "module"), [
    ("/net/conv1/Conv", "conv1"),
    ("/net/layer1/layer1.1/conv2/Conv", "layer1.1.conv2"),
    ("/net/layer2/layer2.0/downsample/downsample.0/Conv", "layer2.0.downsample.0"),  # torch's scope names
    ("/net/fc/Gemm", "fc"),
])
def test_exported_node_names_map_to_modules(node: str, module: str) -> None:
    assert module_path(node) == module


@pytest.mark.parametrize(("text", "sizes"), [
    ("320", (320,)),  # a detector's square side
    ("192x256", (192, 256)),  # a classifier's height x width
    ("192,256", (192, 256)),
    (" 224 x 224 ", (224, 224)),
])
def test_imgsz_option(text: str, sizes: tuple[int, ...]) -> None:
    assert parse_imgsz(text) == sizes


@pytest.mark.parametrize("text", ["300", "320x", "big", "0", "192x256x3"])
def test_a_bad_imgsz_option_is_refused(text: str) -> None:
    with pytest.raises(EdgeAgentError, match=r"--imgsz"):
        parse_imgsz(text)
