"""``edge-agent models train --task anomaly`` end to end on a few synthetic surface frames (a short run: the
numbers of a real run are in docs/anomaly.md). Needs the train extra."""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import onnx
import pytest

from agent.capture.scenes import get_scene
from agent.prefilter.anomaly import AnomalyModel
from agent.prefilter.factory import open_prefilter
from agent.tooling.dataset.synth import write_synthetic_dataset
from tests.cli.test_models_cli import edge_agent

pytestmark = pytest.mark.train


@pytest.mark.slow
def test_a_short_anomaly_training_gives_a_candidate_the_agent_runs(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("torch", reason="needs the train extra (pip install -e '.[train]')")
    good = tmp_path / "good"
    good.mkdir()
    rng = np.random.default_rng(4)
    scene, written = get_scene("surface"), 0
    while written < 40:
        image, truth = scene.render_still(rng, 256, 256)
        if not truth.defects:
            cv2.imwrite(str(good / f"{written:03d}.png"), image)
            written += 1
    write_synthetic_dataset(tmp_path / "defects", 1, 8, seed=41, scene="surface")  # a few labelled defects
    out = tmp_path / "cand"
    proc = edge_agent("models", "train", "--task", "anomaly", "--data", str(good), "--out", str(out), "--steps", "30",
                      "--batch", "4", "--threads", "1", "--imgsz", "128", "--defects", str(tmp_path / "defects"),
                      timeout=900)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: the INT8 gate refused a 30-step model
    assert "only 40 good images; 200 or more" in proc.stderr  # the warning, with its numbers
    assert "threshold" in proc.stderr and "held-out good frames" in proc.stderr
    assert "the threshold rests on the highest held-out scores: " in proc.stderr
    names = {p.name for p in out.iterdir()}
    assert {"good-anomaly.onnx", "good-anomaly.md", "candidate.json"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cand-work-")]  # no work files left behind
    model = open_prefilter(out / "good-anomaly.onnx")
    assert isinstance(model, AnomalyModel) and (model.info.input_w, model.info.input_h) == (128, 128)
    meta = {p.key: p.value for p in onnx.load(str(out / "good-anomaly.onnx")).metadata_props}
    assert meta["task"] == "anomaly" and meta["false_reject_rate"] == "0.01" and meta["grey"] == "True"
    assert float(meta["threshold"]) == pytest.approx(model.threshold)
    record = json.loads((out / "candidate.json").read_text())
    labelled = record["validation"]["labelled"]
    assert record["threshold"]["held_out"] == 10 and record["validation"]["images"] == 20 + labelled["defects"]
    assert labelled["defects"] > 0 and labelled["good"] == 10 and 0.0 <= labelled["recall"] <= 1.0
    assert f"on the {labelled['defects']} labelled defects and 10 held-out good frames: recall" in proc.stderr
    assert record["training"]["cpu_s"] > 0 and record["int8"]["refused"] == (proc.returncode == 1)
    if proc.returncode == 0:
        assert isinstance(open_prefilter(out / "good-anomaly.int8.onnx"), AnomalyModel)
    card = (out / "good-anomaly.md").read_text()
    assert "image AUROC" in card and "Score histogram" in card and "--task anomaly" in card
    assert "labelled defects (`--defects`)" in card
