"""The report: eval.json is strict JSON with every number, report.html embeds its charts,
and the charts render for odd cases (no ground truth, many classes, long names)."""

from __future__ import annotations

import base64
import datetime
import json
import pathlib
import re

import cv2
import numpy as np
import pytest

from agent.tooling.evaluation.detection import DetectionEvaluator, DetectionMetrics
from agent.tooling.evaluation.report import (
    EvalContext,
    render_confusion_matrix,
    render_pr_curves,
    write_detection_report,
)

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


def sample_metrics(names: list[str], seed: int = 0, images: int = 20) -> DetectionMetrics:
    """Objects of every class but the last; predictions jittered around them (some with the
    wrong class, some missing) plus a stray box of the last class."""
    rng = np.random.default_rng(seed)
    ev = DetectionEvaluator(names)
    for _ in range(images):
        n = int(rng.integers(1, 4))
        xy = rng.uniform(0, 400, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(30, 90, (n, 2))], 1)
        cls = rng.integers(0, max(len(names) - 1, 1), n)
        found = rng.random(n) < 0.8
        wrong = rng.random(n) < 0.15
        boxes = np.concatenate([gt[found] + rng.normal(0, 8, (int(found.sum()), 4)), gt[:1] + 200])
        pred_cls = np.concatenate([np.where(wrong, (cls + 1) % len(names), cls)[found], [len(names) - 1]])
        ev.add_image(cls, gt, pred_cls, rng.uniform(0.01, 1, len(pred_cls)), boxes)
    return ev.compute()


def context(tmp_path: pathlib.Path) -> EvalContext:
    return EvalContext(model_id="m@0123456789ab", model_path=tmp_path / "m.onnx", dataset=tmp_path / "ds",
                       split="val", min_score=0.001, nms_iou=0.7, max_detections=300, started=T0,
                       finished=T0 + datetime.timedelta(seconds=3), input_size=(320, 320))


def _reject_constant(name: str) -> float:
    raise AssertionError(f"eval.json holds {name}, which is not JSON")


def test_report_files_json_and_html(tmp_path: pathlib.Path) -> None:
    names = ["scratch", "hole", "<b>stain</b>"]
    metrics = sample_metrics(names)
    files = write_detection_report(tmp_path / "out", metrics, context(tmp_path))
    doc = json.loads(files.json.read_text(), parse_constant=_reject_constant)
    assert doc["model"]["id"] == "m@0123456789ab" and doc["dataset"]["split"] == "val"
    assert doc["metrics"]["mAP50"] == pytest.approx(metrics.map50, abs=1e-6)
    assert doc["timestamps"] == {"started": "2026-01-02T03:04:05+00:00", "finished": "2026-01-02T03:04:08+00:00",
                                 "seconds": 3.0}
    by_name = {c["name"]: c for c in doc["classes"]}
    assert by_name["<b>stain</b>"]["ap50"] is None and by_name["<b>stain</b>"]["gt_count"] == 0  # null, not NaN
    assert len(doc["confusion_matrix"]["matrix"]) == 4 and doc["confusion_matrix"]["labels"][-1] == "background"
    assert len(doc["pr_curves"]["recall"]) == len(doc["pr_curves"]["precision"]["scratch"]) == 1000
    text = files.html.read_text()
    assert "&lt;b&gt;stain&lt;/b&gt;" in text and "<b>stain</b>" not in text  # names are escaped
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")  # self-contained
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(pngs) == 2
    for encoded, file in zip(pngs, (files.pr_curves, files.confusion_matrix), strict=True):
        assert base64.b64decode(encoded) == file.read_bytes()
        image = cv2.imdecode(np.frombuffer(file.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 300 and image.shape[1] > 400


def test_pr_chart_draws_one_colour_per_class(tmp_path: pathlib.Path) -> None:
    image = render_pr_curves(sample_metrics(["a", "b", "c"]))
    assert image.shape == (620, 980, 3)
    # the first two palette colours (tab10 blue and orange, BGR) appear: the two classes with objects
    for bgr in ((180, 119, 31), (14, 127, 255)):
        assert (np.abs(image.astype(int) - bgr).sum(axis=2) < 30).sum() > 200


@pytest.mark.parametrize(
    "names",
    [
        ["only"],  # one class: nothing evaluated in sample_metrics but the strays
        [f"class-{i}" for i in range(15)],  # many classes: grey curves, no per-class legend
        ["a-rather-long-defect-name", "b"],  # long names: vertical column labels
    ],
)
def test_charts_render_for_odd_cases(names: list[str]) -> None:
    metrics = sample_metrics(names, images=8)
    assert render_pr_curves(metrics).ndim == 3
    cm = render_confusion_matrix(metrics.confusion_matrix, metrics.matrix_labels, "t")
    assert cm.ndim == 3 and cm.shape[0] > 100


def test_no_ground_truth_still_renders(tmp_path: pathlib.Path) -> None:
    ev = DetectionEvaluator(["a", "b"])
    ev.add_image([], np.zeros((0, 4)), [0], [0.5], [[0, 0, 5, 5]])
    files = write_detection_report(tmp_path / "o", ev.compute(), context(tmp_path))
    assert json.loads(files.json.read_text())["metrics"]["classes_evaluated"] == 0


def test_confusion_matrix_shape_check() -> None:
    with pytest.raises(ValueError, match=r"expected shape \(3, 3\) for 3 labels, got shape \(2, 2\)"):
        render_confusion_matrix([[1, 0], [0, 1]], ["a", "b", "background"], "t")
