"""Box agreement between two detectors (the benchmarks' same-boxes check)."""

from __future__ import annotations

import math

import pytest

from agent.tooling.evaluation.agreement import box_agreement


def test_boxes_match_one_to_one_by_class_and_iou() -> None:
    a = {"1": [[0, 0, 10, 10, 0, 0.9], [20, 20, 30, 30, 1, 0.8]], "2": [[0, 0, 10, 10, 2, 0.5]]}
    b = {"1": [[0, 0, 10, 11, 0, 0.85], [20, 20, 30, 30, 0, 0.8]],  # second box: same place, other class
         "3": [[5, 5, 9, 9, 1, 0.4]]}
    agree = box_agreement(a, b)
    assert (agree["matched"], agree["only_a"], agree["only_b"]) == (1, 2, 2)
    assert agree["mean_iou"] == pytest.approx(100 / 110)
    assert agree["mean_conf_diff"] == pytest.approx(0.05)


def test_one_box_is_matched_once_best_iou_first() -> None:
    a = {"1": [[0, 0, 10, 10, 0, 0.9]]}
    b = {"1": [[0, 0, 10, 12, 0, 0.7], [0, 0, 10, 10, 0, 0.9]]}
    agree = box_agreement(a, b)
    assert (agree["matched"], agree["only_a"], agree["only_b"]) == (1, 0, 1)
    assert agree["min_iou"] == 1.0 and agree["max_conf_diff"] == 0.0


def test_nothing_matched_gives_nan_not_zero() -> None:
    agree = box_agreement({"1": [[0, 0, 1, 1, 0, 0.5]]}, {})
    assert agree["matched"] == 0 and math.isnan(agree["mean_iou"])
    with pytest.raises(ValueError, match="match_iou must be in"):
        box_agreement({}, {}, match_iou=0.0)
