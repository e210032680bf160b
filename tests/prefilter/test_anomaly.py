"""The anomaly prefilter (task ``anomaly``): confidence mapping, regions -> boxes, loading and refusing models."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from agent.errors import ModelError, ModelLayoutError
from agent.prefilter.anomaly import AnomalyModel, anomaly_confidence, anomaly_regions
from agent.prefilter.classify_input import plan_input
from agent.prefilter.factory import open_prefilter
from tests.prefilter.onnx_builders import brightness_anomaly_model


@pytest.mark.parametrize(("score", "threshold", "expected"), [
    (0.0, 0.3, 0.0),  # nothing unusual
    (0.3, 0.3, 0.5),  # at the threshold: 0.5
    (0.15, 0.3, 0.25),  # half way to the threshold: 0.5 * 0.15 / 0.3
    (0.65, 0.3, 0.75),  # half way from the threshold to 1: 0.5 + 0.5 * 0.35 / 0.7
    (1.0, 0.3, 1.0),  # the most anomalous
    (1.7, 0.3, 1.0),  # out of range is clipped
])
def test_anomaly_confidence(score: float, threshold: float, expected: float) -> None:
    assert anomaly_confidence(score, threshold) == pytest.approx(expected)


def test_regions_are_connected_cells_over_the_threshold_in_frame_pixels() -> None:
    amap = np.zeros((4, 8), np.float32)  # a 32x16 input: cells of 4x4 input pixels
    amap[1, 1:3] = 0.9  # region A: cells x 1..2, y 1
    amap[3, 7] = 0.6  # region B: one cell in the corner
    amap[0, 5] = 0.4  # under the threshold
    plan = plan_input(640, 320, 32, 16, "stretch")  # frame pixels = input pixels * 20
    regions = anomaly_regions(amap, 0.5, plan)
    assert [d.label for d in regions] == ["anomaly", "anomaly"]
    # best first: A (0.9 -> 0.5 + 0.5 * 0.4 / 0.5 = 0.9), B (0.6 -> 0.6)
    assert regions[0].confidence == pytest.approx(0.9) and regions[1].confidence == pytest.approx(0.6)
    assert regions[0].box == pytest.approx((80.0, 80.0, 240.0, 160.0))  # input x 4..12, y 4..8
    assert regions[1].box == pytest.approx((560.0, 240.0, 640.0, 320.0))  # input x 28..32, y 12..16


def test_regions_through_a_letterbox_are_in_the_frame() -> None:
    amap = np.zeros((8, 8), np.float32)
    amap[:, :] = 1.0  # everything, bars included
    plan = plan_input(64, 32, 32, 32, "letterbox")  # 64x32 -> 32x16 in the middle of 32x32
    (region,) = anomaly_regions(amap, 0.5, plan)
    assert region.box == pytest.approx((0.0, 0.0, 64.0, 32.0))  # clipped to the frame


def test_the_model_finds_a_bright_square(tmp_path: pathlib.Path) -> None:
    model = open_prefilter(brightness_anomaly_model(tmp_path / "bright.onnx"))
    assert isinstance(model, AnomalyModel) and model.info.task == "anomaly" and model.info.names == ("anomaly",)
    frame = np.zeros((128, 128, 3), np.uint8)
    frame[40:60, 80:100] = 255
    result = model.infer(frame)
    assert result.task == "anomaly" and result.anomaly == pytest.approx(1.0)
    (region,) = result.detections
    # map cells are 8x8 frame pixels: the square 80..100 x 40..60 touches cells 10..12 x 5..7
    assert region.box == pytest.approx((80.0, 40.0, 104.0, 64.0))
    calm = model.infer(np.full((128, 128, 3), 51, np.uint8))  # 0.2 everywhere: 0.5 * 0.2 / 0.5
    assert calm.anomaly == pytest.approx(0.2, abs=1e-3) and calm.detections == ()


@pytest.mark.parametrize(("metadata", "outputs", "error", "says"), [
    ({"threshold": ""}, ("anomaly_map", "score"), ModelError, "needs metadata key 'threshold'"),
    ({"threshold": "1.5"}, ("anomaly_map", "score"), ModelError, "between 0 and 1"),
    ({"threshold": "'high'"}, ("anomaly_map", "score"), ModelError, "between 0 and 1"),
    ({}, ("heatmap", "score"), ModelLayoutError, "two outputs named anomaly_map"),
    ({"task": "segment", "names": "['x']"}, ("anomaly_map", "score"), ModelError, "an anomaly model"),
])
def test_bad_anomaly_models_are_refused_with_what_was_expected(
        tmp_path: pathlib.Path, metadata: dict[str, str], outputs: tuple[str, str], error: type[Exception],
        says: str) -> None:
    path = brightness_anomaly_model(tmp_path / "bad.onnx", metadata=metadata, outputs=outputs)
    with pytest.raises(error, match=says):
        open_prefilter(path)


@pytest.mark.parametrize("scene", ["surface", "conveyor"])
def test_the_shipped_anomaly_models_run_gated_and_score_defects_higher(scene: str) -> None:
    """models/<scene>-anomaly.int8.onnx: the agent opens it, its INT8 gate record passed, and on 40 frames of a
    seed it was not trained on, frames with defects score higher on average than good ones."""
    from agent.capture.scenes import get_scene
    from agent.capture.sources import as_bgr
    from agent.prefilter.gate_record import read_gate_record

    path = pathlib.Path(__file__).resolve().parents[2] / "models" / f"{scene}-anomaly.int8.onnx"
    model = open_prefilter(path)
    assert isinstance(model, AnomalyModel) and 0.0 < model.threshold < 1.0
    record, problem = read_gate_record(path)
    assert problem is None and record is not None and record["gate"]["passed"]
    world, rng = get_scene(scene), np.random.default_rng(555)
    good, bad = [], []
    for _ in range(40):
        image, truth = world.render_still(rng)
        result = model.infer(as_bgr(image) if image.ndim == 2 else image)
        assert result.anomaly is not None
        (bad if truth.defects else good).append(result.anomaly)
    assert good and bad and np.mean(bad) > np.mean(good), (np.mean(good), np.mean(bad))


def test_anomaly_regions_are_drawn_on_snapshots_and_named_by_models_info(tmp_path: pathlib.Path) -> None:
    """The bright square found by the brightness model becomes an accepted ``anomaly`` box on the snapshot
    (red edge), as a detector's box does; ``models info`` shows the task, its one class and its threshold."""
    import cv2

    from agent.config.models import TriageConfig
    from agent.publish.snapshot import render_snapshot
    from agent.tooling.models import inspect_model
    from agent.triage.policy import decide

    path = brightness_anomaly_model(tmp_path / "bright.onnx")
    frame = np.zeros((128, 128, 3), np.uint8)
    frame[40:60, 80:100] = 255
    decision = decide(open_prefilter(path).infer(frame), TriageConfig())
    assert decision.verdict == "defect" and [t.detection.box for t in decision.tags] == [(80.0, 40.0, 104.0, 64.0)]
    jpeg = render_snapshot(frame, decision, max_width=640, quality=95, max_bytes=500_000)
    assert jpeg is not None
    drawn = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    b, g, r = (int(v) for v in drawn[62, 80])  # the box's left edge below the square: red
    assert r > 150 and b < 100 and g < 100
    summary = inspect_model(path)
    assert (summary.task, summary.names, summary.threshold) == ("anomaly", ("anomaly",), 0.5)
