"""Classification metrics on a hand-worked case."""

from __future__ import annotations

import numpy as np
import pytest

from agent.tooling.evaluation.classification import confusion_matrix, evaluate_classification

NAMES = ["ok", "scratch", "hole"]


def test_hand_worked_case() -> None:
    truth = [0, 0, 0, 0, 1, 1, 1, 2]
    pred = [0, 0, 0, 1, 1, 1, 0, 0]
    m = evaluate_classification(truth, pred, NAMES)
    # rows truth, columns predicted
    assert m.confusion_matrix == ((3, 1, 0), (1, 2, 0), (1, 0, 0))
    assert m.accuracy == pytest.approx(5 / 8) and m.samples == 8
    ok, scratch, hole = m.classes
    # ok: predicted 5 times, 3 right -> P 3/5; 4 true, 3 found -> R 3/4; F1 = 2*.6*.75/1.35 = 2/3
    assert (ok.precision, ok.recall, ok.f1) == pytest.approx((0.6, 0.75, 2 / 3))
    # scratch: predicted 3, 2 right -> P 2/3; 3 true, 2 found -> R 2/3; F1 2/3
    assert (scratch.precision, scratch.recall, scratch.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # hole: never predicted -> P 0 (not a division by zero), R 0, F1 0
    assert (hole.precision, hole.recall, hole.f1, hole.support, hole.predicted) == (0.0, 0.0, 0.0, 1, 0)
    assert m.macro_f1 == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_class_without_samples_is_left_out_of_the_macro_means() -> None:
    m = evaluate_classification([0, 1, 1], [0, 1, 1], NAMES)
    assert m.classes[2].support == 0 and m.macro_f1 == pytest.approx(1.0) and m.accuracy == 1.0


def test_empty_input() -> None:
    m = evaluate_classification([], [], NAMES)
    assert m.samples == 0 and m.accuracy == 0.0 and m.confusion_matrix == ((0, 0, 0),) * 3


@pytest.mark.parametrize(
    ("truth", "pred", "message"),
    [
        # lengths differ
        ([0, 1], [0], "predicted: expected shape (2,) to match truth, got shape (1,)"),
        # a 2-D array of scores instead of class ids
        ([0, 1], np.zeros((2, 3)), "predicted: expected class ids of shape (N,), got shape (2, 3)"),
        # a class the names do not have
        ([0, 3], [0, 1], "truth: class ids must be in 0..2 for 3 classes, got [3]"),
        # fractional ids
        ([0.5], [0], "truth: class ids must be whole numbers"),
    ],
)
def test_checks(truth: list[float], pred: list[int] | np.ndarray, message: str) -> None:
    with pytest.raises(ValueError) as err:
        confusion_matrix(truth, pred, 3)  # type: ignore[arg-type]
    assert message in str(err.value)
