"""``edge-agent models info`` and ``models eval`` as a user runs them (real processes), and
the model inspection behind ``info`` on tiny hand-built graphs."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agent.config.models import DEFAULT_MODEL
from agent.tooling.dataset.synth import write_synthetic_dataset
from agent.tooling.models import inspect_model
from tests.prefilter.onnx_builders import constant_output_model

EDGE_AGENT = [sys.executable, "-m", "agent.cli.main"]
CLASSIFIER_META = {"task": "classify", "names": "{0: 'ok', 1: 'defect'}", "imgsz": "[32, 32]"}


def edge_agent(*args: str, cwd: pathlib.Path | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE_AGENT, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=dict(os.environ))


def assert_fails_cleanly(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("edge-agent: error: ") and message in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("data") / "ds"
    write_synthetic_dataset(root, 4, 6, seed=3)
    return root


def test_eval_writes_report(tiny_dataset: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "report"
    proc = edge_agent("models", "eval", str(DEFAULT_MODEL), "--data", str(tiny_dataset), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "eval: 6/6 images" in proc.stderr
    assert re.search(r"^all\s+\d+", proc.stdout, re.M) and f"report: {out / 'report.html'}" in proc.stdout
    doc = json.loads((out / "eval.json").read_text())
    assert doc["dataset"]["images"] == 6 and doc["model"]["id"].startswith("conveyor-yolov8n@")
    numbers = [doc["metrics"][k] for k in ("mAP50", "mAP50-95", "precision", "recall", "confidence")]
    numbers += [c[k] for c in doc["classes"] for k in ("precision", "recall", "ap50", "ap50_95") if c[k] is not None]
    assert numbers and all(0.0 <= v <= 1.0 for v in numbers)
    assert doc["metrics"]["mAP50"] > 0.3  # the shipped model does find defects on its own scene
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    for name in ("pr_curves.png", "confusion_matrix.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_default_out_folder_and_data_yaml(tiny_dataset: pathlib.Path, tmp_path: pathlib.Path) -> None:
    proc = edge_agent("models", "eval", str(DEFAULT_MODEL), "--data", str(tiny_dataset / "data.yaml"),
                      "--split", "train", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "eval-conveyor-yolov8n" / "eval.json").read_text())["dataset"]["images"] == 4


def test_info_on_the_shipped_model() -> None:
    proc = edge_agent("models", "info", str(DEFAULT_MODEL))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "classes:    4: scratch, hole, stain, missing" in out and "input:      320x320" in out
    assert "precision:  fp32" in out and "task:       detect" in out and re.search(r"^gate record: ", out, re.M)
    doc = json.loads(edge_agent("models", "info", str(DEFAULT_MODEL), "--json").stdout)
    assert len(doc["classes"]) == 4 and doc["input_size"] == [320, 320]
    assert doc["model_id"] == f"conveyor-yolov8n@{doc['sha256'][:12]}" and doc["opset"] >= 11


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # no such model
        (["info", "{tmp}/missing.onnx"], "missing.onnx does not exist; expected an ONNX file"),
        (["eval", "{tmp}/missing.onnx", "--data", "{ds}"], "missing.onnx does not exist"),
        # a file that is not ONNX
        (["info", "{tmp}/junk.onnx"], "junk.onnx is not an ONNX model"),
        (["eval", "{tmp}/junk.onnx", "--data", "{ds}"], "could not be loaded by onnxruntime"),
        # a classifier against a YOLO detection dataset
        (["eval", "{tmp}/cls.onnx", "--data", "{ds}"], "is a YOLO detection dataset (images/, labels/); a classifier "
                                                        "needs a classify dataset folder"),
        # dataset problems
        (["eval", "{model}", "--data", "{tmp}/nowhere"], "nowhere does not exist; expected a data.yaml"),
        (["eval", "{model}", "--data", "{ds}", "--split", "test"], "no 'test' split; it has train, val"),
        (["eval", "{model}", "--data", "{tmp}/bad"], "000000.txt, line 1: class id 7 is out of range"),
        # thresholds out of range
        (["eval", "{model}", "--data", "{ds}", "--conf", "1.5"], "--conf 1.5: expected a confidence in 0..1"),
        (["eval", "{model}", "--data", "{ds}", "--iou", "0"], "--iou 0.0: expected an NMS IoU threshold"),
    ],
)
def test_bad_input_is_a_one_line_error(tiny_dataset: pathlib.Path, tmp_path: pathlib.Path, args: list[str],
                                       message: str) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage" * 64)
    constant_output_model(tmp_path / "cls.onnx", np.array([[0.9, 0.1]], np.float32), metadata=CLASSIFIER_META)
    bad = tmp_path / "bad"
    for sub in ("images", "labels"):
        (bad / sub / "val").mkdir(parents=True)
    (bad / "images" / "val" / "000000.jpg").write_bytes((tiny_dataset / "images" / "val" / "000000.jpg").read_bytes())
    (bad / "labels" / "val" / "000000.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    subs = {"{tmp}": str(tmp_path), "{ds}": str(tiny_dataset), "{model}": str(DEFAULT_MODEL)}
    argv = []
    for a in args:
        for k, v in subs.items():
            a = a.replace(k, v)
        argv.append(a)
    assert_fails_cleanly(edge_agent("models", *argv), message)


def test_info_describes_a_classifier_and_a_gate_record(tmp_path: pathlib.Path) -> None:
    path = constant_output_model(tmp_path / "cls.onnx", np.array([[0.9, 0.1]], np.float32), metadata=CLASSIFIER_META)
    proc = edge_agent("models", "info", str(path))
    assert "gate record: none (cls.gate.json does not exist)" in proc.stdout
    assert json.loads(edge_agent("models", "info", str(path), "--json").stdout)["gate_record"] is None
    (tmp_path / "cls.gate.json").write_text(json.dumps(
        {"verdict": "pass", "metrics": {"fp32_map50_95": 0.43, "int8_map50_95": 0.42}, "images": [1, 2]}))
    proc = edge_agent("models", "info", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "task:       classify" in proc.stdout and "classes:    2: ok, defect" in proc.stdout
    assert f"gate record: {tmp_path / 'cls.gate.json'}" in proc.stdout
    assert "  verdict: pass" in proc.stdout and "fp32_map50_95=0.43" in proc.stdout


def _graph_model(path: pathlib.Path, nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto],
                 out_type: int = TensorProto.FLOAT) -> pathlib.Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", out_type, [1, 3, 8, 8])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_precision_from_the_graph(tmp_path: pathlib.Path) -> None:
    # QDQ pair -> int8
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    qdq = _graph_model(tmp_path / "q.onnx", [
        helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ], [scale, zero])
    assert inspect_model(qdq).precision == "int8"
    # float16 weights -> fp16
    half = _graph_model(tmp_path / "h.onnx", [
        helper.make_node("Cast", ["images"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("Add", ["x16", "w"], ["y"]),
    ], [numpy_helper.from_array(np.zeros((1,), np.float16), "w")], out_type=TensorProto.FLOAT16)
    s = inspect_model(half)
    assert s.precision == "fp16" and s.opset == 17 and s.input_size == (8, 8)
    # no metadata and no sidecar: the task is not guessed
    assert s.task == "unknown" and s.names == () and s.metadata_source == "none"


# -- classifiers ----------------------------------------------------------------------------------------------

SHIPPED_CLASSIFIER = DEFAULT_MODEL.parent / "conveyor-resnet-cls.int8.onnx"


def test_eval_of_the_shipped_classifier(tmp_path: pathlib.Path) -> None:
    from agent.tooling.dataset.synth import write_classify_dataset

    data = write_classify_dataset(tmp_path / "cls", 2, 12, seed=21)
    out = tmp_path / "report"
    proc = edge_agent("models", "eval", str(SHIPPED_CLASSIFIER), "--data", str(data), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "eval: 12/12 images" in proc.stderr
    assert re.search(r"^accuracy \d\.\d{3}  macro F1 \d\.\d{3}", proc.stdout, re.M), proc.stdout
    assert re.search(r"^triage at accept 0.6, margin 0.2: \d+/12 decided", proc.stdout, re.M), proc.stdout
    doc = json.loads((out / "eval.json").read_text())
    assert doc["schema"] == "edge-agent/eval-classification/1" and doc["dataset"]["images"] == 12
    assert doc["model"]["preprocessing"]["resize"] == "stretch" and doc["model"]["input_size"] == [256, 192]
    assert doc["metrics"]["accuracy"] >= 0.5  # 12 frames: a loose floor; the model card has the real number
    assert sum(map(sum, doc["confusion_matrix"]["matrix"])) == 12
    for name in ("confusion_matrix.png", "per_class.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 2
    # the classify dataset is no YOLO dataset: the detector says so
    assert_fails_cleanly(edge_agent("models", "eval", str(DEFAULT_MODEL), "--data", str(data)),
                         "no images/val/ folder and no data.yaml")


def test_info_on_the_shipped_classifier() -> None:
    proc = edge_agent("models", "info", str(SHIPPED_CLASSIFIER))
    assert proc.returncode == 0, proc.stderr
    assert "task:       classify" in proc.stdout and "classes:    5: pass, scratch, hole, stain, missing" in proc.stdout
    assert "input:      256x192" in proc.stdout and "precision:  int8" in proc.stdout
    assert "gate:       passed" in proc.stdout
    doc = json.loads(edge_agent("models", "info", str(SHIPPED_CLASSIFIER), "--json").stdout)
    assert doc["output_shapes"] == [[1, 5]] and doc["opset"] >= 17
