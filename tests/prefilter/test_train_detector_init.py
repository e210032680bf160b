"""scripts/yolo_from_onnx.py: the shipped detector's ONNX rebuilt into trainable ultralytics weights gives the
ONNX model's output (needs the train extra; skipped without ultralytics)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

from agent.capture.synthetic import DEFECT_CLASSES, render_still
from agent.config.models import DEFAULT_MODEL
from agent.prefilter.detector import YoloDetector

SCRIPTS = pathlib.Path(__file__).resolve().parents[2] / "scripts"

pytestmark = pytest.mark.train


def _module(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_the_rebuilt_model_reproduces_the_onnx_output(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("ultralytics", reason="needs the train extra (pip install -e '.[train]')")
    train = _module("train_detector")
    rebuild = _module("yolo_from_onnx")
    from ultralytics import YOLO

    yaml_path = tmp_path / "yolov8n-relu.yaml"
    yaml_path.write_text(train.model_yaml(len(DEFECT_CLASSES), "relu"))
    net = YOLO(str(yaml_path), task="detect").model
    detector = YoloDetector.from_file(DEFAULT_MODEL)
    rng = np.random.default_rng(3)
    images = [detector.preprocess(render_still(rng)[0])[0].copy() for _ in range(8)]
    check = rebuild.load_onnx_into(net, DEFAULT_MODEL, images)
    assert check["max_abs_diff_rebuilt"] < 1e-4, check  # BatchNorms re-created, same function in eval mode


def test_a_model_of_another_architecture_is_refused(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("ultralytics", reason="needs the train extra (pip install -e '.[train]')")
    train = _module("train_detector")
    rebuild = _module("yolo_from_onnx")
    from ultralytics import YOLO

    yaml_path = tmp_path / "yolov8n-relu-2.yaml"
    yaml_path.write_text(train.model_yaml(2, "relu"))  # 2 classes: the head's last convolutions differ
    net = YOLO(str(yaml_path), task="detect").model
    with pytest.raises((SystemExit, RuntimeError)):
        rebuild.load_onnx_into(net, DEFAULT_MODEL, [np.zeros((1, 3, 320, 320), np.float32)])
