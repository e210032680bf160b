"""Anomaly metrics on hand-worked numbers: AUROC, the threshold at a false-reject rate, recall and precision at
a threshold, box masks on the map, the text histogram."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from agent.tooling.evaluation.anomaly import at_threshold, auroc, box_mask, histogram, threshold_at_frr


@pytest.mark.parametrize(("labels", "scores", "expected"), [
    ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),  # separated
    ([0, 0, 1, 1], [0.8, 0.9, 0.1, 0.2], 0.0),  # upside down
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # 3 of the 4 (defect, good) pairs in order
    ([0, 1], [0.5, 0.5], 0.5),  # a tie counts half
    ([0, 0, 0], [0.1, 0.2, 0.3], None),  # no defects: undefined
])
def test_auroc(labels: list[int], scores: list[float], expected: float | None) -> None:
    assert auroc(labels, scores) == (pytest.approx(expected) if expected is not None else None)


def test_threshold_at_a_false_reject_rate() -> None:
    good = np.arange(100) / 100.0  # 0.00 .. 0.99
    assert threshold_at_frr(good, 0.01) == pytest.approx(0.98)  # only 0.99 is above: 1 %
    assert threshold_at_frr(good, 0.0) == pytest.approx(0.99)  # none above
    assert threshold_at_frr([0.3, 0.1, 0.2], 0.01) == pytest.approx(0.3)  # few frames: the largest
    with pytest.raises(ValueError, match="no good scores"):
        threshold_at_frr([], 0.01)


def test_recall_and_precision_at_a_threshold() -> None:
    at = at_threshold([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.4], 0.5)
    # above 0.5: one good (0.6) of 4 -> FRR 0.25; one defect (0.7) of 2 -> recall 0.5; 1 of 2 flagged -> precision 0.5
    assert (at.false_reject_rate, at.recall, at.precision) == (0.25, 0.5, 0.5)


def test_box_mask_marks_the_cells_whose_centre_is_in_a_box() -> None:
    mask = box_mask(np.array([[0.0, 0.0, 20.0, 10.0]]), 40, 40, 4, 4)  # cells of 10x10, centres at 5, 15, ...
    assert mask.astype(int).tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_histogram_counts_good_and_defective_per_bin() -> None:
    lines = histogram([0.05, 0.05, 0.15], [0.95], bins=10, width=4)
    assert lines[1].split()[:3] == ["0.0-0.1", "2", "0"] and lines[1].endswith("gggg|")
    assert lines[10].split()[:3] == ["0.9-1.0", "0", "1"] and lines[10].endswith("|DD")


def test_models_eval_reports_an_anomaly_model(tmp_path: pathlib.Path) -> None:
    """``models eval`` on the brightness model and a small labelled split: the numbers, the histogram, files."""
    from agent.tooling.dataset.synth import write_synthetic_dataset
    from tests.cli.test_models_cli import edge_agent
    from tests.prefilter.onnx_builders import brightness_anomaly_model

    write_synthetic_dataset(tmp_path / "ds", 1, 12, seed=3, scene="surface")
    model = brightness_anomaly_model(tmp_path / "bright.onnx", 64, 64)
    proc = edge_agent("models", "eval", str(model), "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "ev"))
    assert proc.returncode == 0, proc.stderr
    assert "12 images" in proc.stdout and "image AUROC" in proc.stdout and "score      good  defective" in proc.stdout
    doc = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert doc["images"] == 12 and 0.0 <= doc["image_auroc"] <= 1.0
    assert set(doc["at_model_threshold"]) == {"threshold", "false_reject_rate", "recall", "precision"}
    assert sum(doc["verdicts"].values()) == 12 and (tmp_path / "ev" / "report.txt").exists()
