"""``edge-agent models train`` end to end, and rebuilding trainable networks from ONNX files (needs the train
extra: skipped with the reason where torch or ultralytics is not installed)."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import onnx
import pytest

from agent.errors import ModelError
from agent.prefilter.classifier import ImageClassifier
from agent.prefilter.detector import YoloDetector
from agent.prefilter.factory import open_prefilter
from agent.prefilter.gate_record import read_gate_record
from agent.tooling.dataset.synth import CLASSIFY_NAMES, write_classify_dataset, write_synthetic_dataset
from tests.cli.test_models_cli import edge_agent

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"
DETECTOR = MODELS / "conveyor-yolov8n.onnx"
CLASSIFIER = MODELS / "conveyor-resnet-cls.int8.onnx"
EPOCH_LINE = re.compile(r"^epoch 1/1  .*val .*elapsed \d+s  ETA 0s$", re.M)

pytestmark = pytest.mark.train


def _need(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module, reason="needs the train extra (pip install -e '.[train]')")


@pytest.mark.slow
def test_the_shipped_detector_fine_tuned_for_an_epoch_gives_a_gated_candidate(tmp_path: pathlib.Path) -> None:
    _need("torch", "ultralytics")
    write_synthetic_dataset(tmp_path / "ds", 16, 8, seed=11)
    out = tmp_path / "candidate"
    proc = edge_agent("models", "train", "--data", str(tmp_path / "ds"), "--base", str(DETECTOR), "--out", str(out),
                      "--epochs", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)  # after the gate's verdict
    assert EPOCH_LINE.search(proc.stderr), proc.stderr  # one progress line per epoch, with ETA
    assert sorted(p.name for p in out.iterdir()) == [
        "candidate.json", "conveyor-yolov8n.int8.gate.json", "conveyor-yolov8n.int8.onnx", "conveyor-yolov8n.md",
        "conveyor-yolov8n.onnx"]  # no work files left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".candidate-work-")]
    base = open_prefilter(DETECTOR)
    for name in ("conveyor-yolov8n.onnx", "conveyor-yolov8n.int8.onnx"):  # both run in the agent's runtime
        model = open_prefilter(out / name)
        assert isinstance(model, YoloDetector) and model.info.names == base.info.names
        assert (model.info.input_w, model.info.input_h) == (320, 320)
    record, problem = read_gate_record(out / "conveyor-yolov8n.int8.onnx")
    assert problem is None and record is not None and record["gate"]["passed"]
    assert record["validation"]["images"] == 8  # the gate ran on the dataset's val split
    assert record["quantization"]["stem_kept_float"] == ["/model.0/conv/Conv", "/model.1/conv/Conv"]  # --float-stem 2
    candidate = json.loads((out / "candidate.json").read_text())
    assert candidate["base"]["file"] == str(DETECTOR) and candidate["int8"] == "passed"
    assert [row["epoch"] for row in candidate["history"]] == [1]
    assert set(candidate["history"][0]["losses"]) == {"box", "cls", "dfl"}
    assert 0.0 <= candidate["metrics"]["candidate"] <= 1.0 and candidate["metrics"]["metric"] == "mAP50"
    assert 0.0 <= candidate["metrics"]["uncertain_share"]["candidate"] <= 1.0  # what would go to the VLM
    card = (out / "conveyor-yolov8n.md").read_text()
    assert "fine-tuned detector (candidate)" in card and "`models/conveyor-yolov8n.onnx`" not in card.split("|")[0]
    assert "| 1/1 |" in card and "## INT8 (accuracy-gated)" in card and "16 train / 8 val images" in card
    assert "stage 4" in card  # the base model's own training, from its card
    assert re.search(r"[0-9.]+% of the frames\s+are uncertain", card), card
    meta = {p.key: p.value for p in onnx.load(str(out / "conveyor-yolov8n.onnx")).metadata_props}
    assert json.loads(meta["edge_agent.training"])["base_sha256"] == candidate["base"]["sha256"]


@pytest.mark.slow
def test_the_shipped_int8_classifier_fine_tuned_for_an_epoch_gives_a_candidate(tmp_path: pathlib.Path) -> None:
    _need("torch", "torchvision")
    write_classify_dataset(tmp_path / "ds", 16, 8, seed=11)
    out = tmp_path / "candidate"
    proc = edge_agent("models", "train", "--data", str(tmp_path / "ds"), "--base", str(CLASSIFIER), "--out",
                      str(out), "--epochs", "1", "--no-quantize", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert EPOCH_LINE.search(proc.stderr), proc.stderr
    assert "INT8 weights (dequantized to start from)" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["candidate.json", "conveyor-resnet-cls.md",
                                                       "conveyor-resnet-cls.onnx"]
    model = open_prefilter(out / "conveyor-resnet-cls.onnx")
    base = open_prefilter(CLASSIFIER)
    assert isinstance(model, ImageClassifier) and model.info.names == CLASSIFY_NAMES
    assert model.info.classifier_input == base.info.classifier_input  # the same input preparation
    assert (model.info.input_w, model.info.input_h) == (base.info.input_w, base.info.input_h)
    candidate = json.loads((out / "candidate.json").read_text())
    assert candidate["base"]["precision"] == "int8" and candidate["int8"] == "not made (--no-quantize)"
    assert set(candidate["history"][0]["metrics"]) == {"loss", "accuracy"}
    card = (out / "conveyor-resnet-cls.md").read_text()
    assert "fine-tuned frame classifier (candidate)" in card and "width 64" in card and "| 1/1 |" in card


def test_the_classifier_rebuilt_from_its_export_gives_the_same_probabilities(tmp_path: pathlib.Path) -> None:
    _need("torch", "torchvision")
    import torch

    from agent.tooling.training.onnx_to_resnet import resnet_from_onnx
    from agent.tooling.training.resnet import build_net, export_classifier

    torch.manual_seed(0)
    net = build_net(4, 3, "avgmax")
    with torch.no_grad():  # BatchNorms that do something, so the folding matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(6, 3, 48, 64)).astype(np.float32)
    path = tmp_path / "tiny.onnx"
    export_classifier(net, path, (48, 64), {"task": "classify", "names": repr({0: "a", 1: "b", 2: "c"})}, inputs)
    rebuilt, info = resnet_from_onnx(path, [x[None] for x in inputs], tolerance=1e-4)
    assert (info["width"], info["pool"]) == (4, "avgmax")
    rebuilt.eval()
    net.eval()
    with torch.no_grad():
        x = torch.from_numpy(inputs)
        assert torch.allclose(torch.softmax(rebuilt(x), 1), torch.softmax(net(x), 1), atol=1e-5)


def test_a_classifier_of_another_layout_is_refused(tmp_path: pathlib.Path) -> None:
    _need("torch", "torchvision")
    import torch

    from agent.tooling.training.onnx_to_resnet import resnet_from_onnx
    from agent.tooling.training.resnet import export_classifier

    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 2))
    path = tmp_path / "other.onnx"
    inputs = np.zeros((1, 3, 32, 32), np.float32)
    export_classifier(other, path, (32, 32), {"task": "classify", "names": repr({0: "a", 1: "b"})}, inputs)
    assert open_prefilter(path).info.task == "classify"  # the agent runs it
    with pytest.raises(ModelError, match="the first convolution is not a 7x7 over 3 channels"):
        resnet_from_onnx(path, [inputs], tolerance=1e-4)


@pytest.mark.slow
def test_the_int8_detector_rebuilt_is_within_its_rounding_of_the_onnx_output(tmp_path: pathlib.Path) -> None:
    _need("torch", "ultralytics")
    from agent.capture.synthetic import render_still
    from agent.tooling.training.extras import configure_ultralytics
    from agent.tooling.training.onnx_to_yolo import yolo_from_onnx

    configure_ultralytics(tmp_path / "config", verbose=False)
    int8 = MODELS / "conveyor-yolov8n.int8.onnx"
    detector = open_prefilter(int8)
    rng = np.random.default_rng(3)
    images = [detector.preprocess(render_still(rng)[0])[0].copy() for _ in range(8)]
    checkpoint, info = yolo_from_onnx(int8, 4, tmp_path, images, tolerance=0.1)
    assert checkpoint.is_file() and (info["scale"], info["activation"]) == ("n", "relu")
    assert info["max_relative_difference"] < 0.05  # the INT8 model's own activation rounding
