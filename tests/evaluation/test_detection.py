"""Detection metrics on hand-worked cases, and against ultralytics' own code where it is installed.

AP arithmetic used below (ultralytics 8.4 ``compute_ap``): the PR points get (0, 1) in front and
(last recall, 0), (1, 0) behind; precision becomes its envelope; np.interp reads it at recall
0, 0.01, ..., 1 (at a repeated recall it takes the *last* point, which is 0 at the last recall
reached); the trapezoidal rule integrates those 101 values.
"""

from __future__ import annotations

import pathlib
import types
import warnings

import numpy as np
import pytest

from agent.tooling.evaluation.detection import (
    IOU_THRESHOLDS,
    DetectionEvaluator,
    box_iou,
    compute_ap,
    confusion_matrix_image,
    match_predictions,
)

NO_BOXES = np.zeros((0, 4))
GT_A = [0.0, 0.0, 10.0, 10.0]
GT_B = [100.0, 100.0, 120.0, 140.0]


Image = tuple[list[int], "list[list[float]] | np.ndarray", list[int], list[float], list[list[float]]]


def evaluate(names: list[str], *images: Image) -> DetectionEvaluator:
    ev = DetectionEvaluator(names)
    for gt_cls, gt_boxes, pred_cls, scores, pred_boxes in images:
        ev.add_image(gt_cls, gt_boxes, pred_cls, scores, pred_boxes)
    return ev


@pytest.mark.parametrize(
    ("recall", "precision", "expected"),
    [
        # one GT, found: mrec 0,1,1,1 / envelope 1,1,0,0; values 1 at 0..0.99, 0 at 1.0
        # -> 99 * 0.01 + 0.01 * (1 + 0) / 2 = 0.995 (ultralytics' ceiling, not 1)
        ([1.0], [1.0], 0.995),
        # one of two GT at 0.9, then an FP: recall .5,.5 precision 1,.5 -> mrec 0,.5,.5,.5,1,
        # envelope 1,1,.5,0,0: 1 at 0..0.49, 0 from 0.5 on -> 49 * 0.01 + 0.01 * (1 + 0) / 2 = 0.495
        ([0.5, 0.5], [1.0, 0.5], 0.495),
        # FP first, then the only GT: recall 0,1 precision 0,.5 -> mrec 0,0,1,1,1, envelope 1,.5,.5,0,0;
        # at recall 0 the last repeated point (.5) wins -> .5 at 0..0.99, 0 at 1:
        # 99 * 0.01 * .5 + 0.01 * (.5 + 0) / 2 = 0.4975
        ([0.0, 1.0], [0.0, 0.5], 0.4975),
        # nothing found: recall 0, precision 0 -> the value at 0 is already 0 -> AP 0
        ([0.0], [0.0], 0.0),
    ],
)
def test_compute_ap_by_hand(recall: list[float], precision: list[float], expected: float) -> None:
    ap, _envelope, _mrec = compute_ap(np.array(recall), np.array(precision))
    assert ap == pytest.approx(expected, abs=1e-12)


def test_perfect_predictions_score_the_ultralytics_ceiling() -> None:
    # two objects, two exact predictions: recall .5, 1 at precision 1 -> AP 0.995 at every IoU
    m = evaluate(["a"], ([0, 0], [GT_A, GT_B], [0, 0], [0.9, 0.8], [GT_A, GT_B])).compute()
    (a,) = m.classes
    assert a.ap50 == pytest.approx(0.995) and a.ap50_95 == pytest.approx(0.995)
    assert m.map50 == pytest.approx(0.995) and m.map50_95 == pytest.approx(0.995)
    # F1 is 1 wherever both are kept (confidence <= 0.8); the first maximum is confidence 0
    assert a.precision == pytest.approx(1.0) and a.recall == pytest.approx(1.0) and m.confidence == 0.0
    assert a.gt_count == 2 and a.predictions == 2


def test_one_of_two_found_and_a_false_positive() -> None:
    # GT A found at 0.9; a box far from both at 0.8; GT B missed -> AP 0.495 (see the table above)
    far = [300.0, 300.0, 320.0, 320.0]
    m = evaluate(["a"], ([0, 0], [GT_A, GT_B], [0, 0], [0.9, 0.8], [GT_A, far])).compute()
    assert m.classes[0].ap50 == pytest.approx(0.495)
    assert m.classes[0].ap50_95 == pytest.approx(0.495)  # the hit is exact, so every threshold agrees
    assert m.map50 == pytest.approx(0.495)


def test_iou_of_0_6_counts_only_up_to_threshold_0_6() -> None:
    # shifted by 2.5 px: intersection 7.5 * 10 = 75, union 100 + 100 - 75 = 125, IoU 0.6 exactly
    shifted = [2.5, 0.0, 12.5, 10.0]
    assert box_iou(np.array([GT_A]), np.array([shifted]))[0, 0] == pytest.approx(0.6)
    tp = match_predictions(np.array([0]), np.array([GT_A]), np.array([0]), np.array([0.9]), np.array([shifted]))
    assert tp[0].tolist() == [t <= 0.6 for t in IOU_THRESHOLDS] == [True] * 3 + [False] * 7
    m = evaluate(["a"], ([0], [GT_A], [0], [0.9], [shifted])).compute()
    # AP 0.995 at 0.50, 0.55, 0.60 and 0 at the other seven: AP50-95 = 3/10 of AP50
    assert m.classes[0].ap50 == pytest.approx(0.995)
    assert m.classes[0].ap50_95 == pytest.approx(0.3 * 0.995)
    assert m.classes[0].ap == pytest.approx((0.995,) * 3 + (0.0,) * 7)


def test_class_without_ground_truth_is_reported_but_not_averaged() -> None:
    # class a: one perfect hit (AP 0.995); class b: no objects, one prediction on nothing
    m = evaluate(["a", "b"], ([0], [GT_A], [0, 1], [0.9, 0.7], [GT_A, GT_B])).compute()
    a, b = m.classes
    assert m.map50 == pytest.approx(0.995) and m.map50_95 == pytest.approx(0.995)  # not (0.995 + 0) / 2
    assert b.gt_count == 0 and b.ap50 is None and b.precision is None and b.pr_precision == ()
    assert b.predictions == 1  # still visible: one prediction at/above the chosen confidence
    assert [c.name for c in m.evaluated] == ["a"]
    # the matrix sees it: truth background, predicted b
    assert m.confusion_matrix[2][1] == 1


def test_duplicate_predictions_on_one_object_are_one_tp_and_one_fp() -> None:
    # given in the order 0.8, 0.9: the 0.9 one is matched first, whatever the input order
    tp = match_predictions(np.array([0]), np.array([GT_A]), np.array([0, 0]), np.array([0.8, 0.9]),
                           np.array([GT_A, GT_A]))
    assert tp[:, 0].tolist() == [False, True] and tp.all(axis=1).tolist() == [False, True]
    # recall 1, 1 precision 1, .5 -> envelope 1 up to recall 1, where it reads 0 -> 0.995
    m = evaluate(["a"], ([0], [GT_A], [0, 0], [0.8, 0.9], [GT_A, GT_A])).compute()
    assert m.classes[0].ap50 == pytest.approx(0.995)


@pytest.mark.parametrize(
    ("gt_cls", "gt_boxes", "pred_cls", "scores", "pred_boxes", "expected_at_05"),
    [
        # the wrong class never matches
        ([0], [GT_A], [1], [0.9], [GT_A], [False]),
        # one prediction between two objects takes the one it overlaps most (IoU 0.8 vs 0.5 -> B side)
        ([0, 0], [[0, 0, 10, 10], [10, 0, 20, 10]], [0], [0.9], [[2, 0, 12, 10]], [True]),
        # the higher score goes first even with the lower IoU; the second finds the object taken
        ([0], [GT_A], [0, 0], [0.9, 0.8], [[1, 0, 11, 10], GT_A], [True, False]),
        # a box touching but not overlapping: IoU 0
        ([0], [GT_A], [0], [0.9], [[10, 0, 20, 10]], [False]),
        # no objects: every prediction is a false positive
        ([], NO_BOXES, [0], [0.5], [GT_A], [False]),
    ],
)
def test_matching_rules(gt_cls: list[int], gt_boxes: list[list[float]], pred_cls: list[int], scores: list[float],
                        pred_boxes: list[list[float]], expected_at_05: list[bool]) -> None:
    tp = match_predictions(np.array(gt_cls), np.array(gt_boxes), np.array(pred_cls), np.array(scores),
                           np.array(pred_boxes))
    assert tp[:, 0].tolist() == expected_at_05


def test_second_prediction_falls_back_to_the_next_best_object() -> None:
    # overlapping objects L = (0..10) and R = (4..14), both 10 high. The 0.9 prediction sits on L.
    # The 0.8 one at (1.5..11.5): IoU with L = 85 / 115 = 0.74, with R = 75 / 125 = 0.6. L is taken,
    # so it takes R, and counts at 0.50, 0.55, 0.60 only.
    left, right = [0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]
    second = [1.5, 0.0, 11.5, 10.0]
    tp = match_predictions(np.array([0, 0]), np.array([left, right]), np.array([0, 0]), np.array([0.9, 0.8]),
                           np.array([left, second]))
    assert tp[0].all() and tp[1].tolist() == [True] * 3 + [False] * 7
    # alone, the same prediction takes L (the higher IoU) at every threshold up to 0.70
    tp = match_predictions(np.array([0, 0]), np.array([left, right]), np.array([0]), np.array([0.8]),
                           np.array([second]))
    assert tp[0].tolist() == [True] * 5 + [False] * 5


def test_confusion_matrix_of_one_image() -> None:
    # truth: a at A, b at B. Predictions: b on A (0.9, a confusion), a on nothing (0.8, FP),
    # b on B but below the confidence (0.1, ignored) -> B is missed.
    far = [300.0, 300.0, 320.0, 320.0]
    m = confusion_matrix_image(np.array([0, 1]), np.array([GT_A, GT_B]), np.array([1, 0, 1]),
                               np.array([0.9, 0.8, 0.1]), np.array([GT_A, far, GT_B]), 2, confidence=0.25)
    assert m.tolist() == [
        [0, 1, 0],  # truth a: predicted b
        [0, 0, 1],  # truth b: missed (background column)
        [1, 0, 0],  # truth background: one a on nothing
    ]


def test_no_ground_truth_at_all() -> None:
    m = evaluate(["a", "b"], ([], NO_BOXES, [0], [0.5], [GT_A])).compute()
    assert m.map50 == 0.0 and m.map50_95 == 0.0 and m.evaluated == () and m.images == 1
    assert m.confusion_matrix == ((0, 0, 0), (0, 0, 0), (1, 0, 0))


def test_no_images() -> None:
    m = DetectionEvaluator(["a"]).compute()
    assert m.images == 0 and m.map50 == 0.0 and m.classes[0].gt_count == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # scores one short of the boxes
        (([0], [GT_A], [0, 0], [0.9], [GT_A, GT_B]), "pred_scores: expected shape (2,) to match pred_boxes of "
                                                    "shape (2, 4), got shape (1,)"),
        # a flat box list
        (([0], GT_A, [], [], NO_BOXES), "gt_boxes: expected xyxy boxes of shape (N, 4), got shape (4,)"),
        # boxes with 5 columns (xywh + angle, or class + box)
        (([0], [[0, 1, 2, 3, 4]], [], [], NO_BOXES), "got shape (1, 5)"),
        # a class id the names do not have
        (([2], [GT_A], [], [], NO_BOXES), "gt_classes: class ids must be in 0..1 for 2 classes, got [2]"),
        # NaN score
        (([], NO_BOXES, [0], [float("nan")], [GT_A]), "pred_scores: scores must be finite"),
    ],
)
def test_shape_and_value_checks(args: tuple[object, ...], message: str) -> None:
    ev = DetectionEvaluator(["a", "b"])
    with pytest.raises(ValueError) as err:
        ev.add_image(*args)  # type: ignore[arg-type]
    assert message in str(err.value)


RandomImage = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _random_case(rng: np.random.Generator, images: int, nc: int) -> list[RandomImage]:
    """Objects of classes 0..nc-2 (the last class never has ground truth), jittered predictions,
    wrong classes, duplicates, and boxes on nothing; continuous scores (no ties)."""
    out: list[RandomImage] = []
    for _ in range(images):
        g = int(rng.integers(0, 6))
        xy = rng.uniform(0, 500, (g, 2))
        gt_boxes = np.concatenate([xy, xy + rng.uniform(20, 120, (g, 2))], 1)
        gt_cls = rng.integers(0, nc - 1, g)
        boxes, classes = [], []
        for k in range(g):
            for _ in range(int(rng.integers(0, 3))):
                boxes.append(gt_boxes[k] + rng.normal(0, 8, 4))
                classes.append(int(gt_cls[k]) if rng.random() < 0.85 else int(rng.integers(0, nc)))
        for _ in range(int(rng.integers(0, 4))):
            p = rng.uniform(0, 500, 2)
            boxes.append(np.concatenate([p, p + rng.uniform(20, 120, 2)]))
            classes.append(int(rng.integers(0, nc)))
        out.append((np.asarray(gt_cls), gt_boxes, np.array(classes, np.int64), rng.uniform(0.001, 1.0, len(boxes)),
                    np.array(boxes).reshape(-1, 4)))
    return out


@pytest.mark.train
def test_matches_ultralytics_on_a_random_case(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch = pytest.importorskip("torch", reason="needs the train extra (pip install -e '.[train]')")
        metrics = pytest.importorskip("ultralytics.utils.metrics",
                                      reason="needs the train extra (pip install -e '.[train]')")
        from ultralytics.engine.validator import BaseValidator

    nc = 4
    cases = _random_case(np.random.default_rng(3), 60, nc)
    ours = DetectionEvaluator([f"c{i}" for i in range(nc)])
    validator = types.SimpleNamespace(iouv=torch.linspace(0.5, 0.95, 10))
    tps, confs, pcls, tcls = [], [], [], []
    for gt_cls, gt_boxes, pred_cls, scores, pred_boxes in cases:
        ours.add_image(gt_cls, gt_boxes, pred_cls, scores, pred_boxes)
        order = np.argsort(-scores)  # ultralytics gets predictions best first from NMS
        if len(gt_cls) and len(scores):
            iou = metrics.box_iou(torch.tensor(gt_boxes), torch.tensor(pred_boxes[order]))
            tp = BaseValidator.match_predictions(validator, torch.tensor(pred_cls[order]),  # type: ignore[arg-type]
                                                 torch.tensor(gt_cls), iou).numpy()
        else:
            tp = np.zeros((len(scores), 10), bool)
        tps.append(tp)
        confs.append(scores[order])
        pcls.append(pred_cls[order])
        tcls.append(gt_cls)
    _tp, _fp, p, r, f1, ap, present, *_curves, pr = metrics.ap_per_class(
        np.concatenate(tps), np.concatenate(confs), np.concatenate(pcls), np.concatenate(tcls))
    m = ours.compute()
    assert present.tolist() == [c.class_id for c in m.evaluated] == [0, 1, 2]
    assert [c.ap50 for c in m.evaluated] == pytest.approx(ap[:, 0].tolist(), abs=1e-12)
    assert [c.ap50_95 for c in m.evaluated] == pytest.approx(ap.mean(1).tolist(), abs=1e-12)
    assert [c.precision for c in m.evaluated] == pytest.approx(p.tolist(), abs=1e-12)
    assert [c.recall for c in m.evaluated] == pytest.approx(r.tolist(), abs=1e-12)
    assert [c.f1 for c in m.evaluated] == pytest.approx(f1.tolist(), abs=1e-12)
    assert m.map50 == pytest.approx(ap[:, 0].mean(), abs=1e-12)
    assert m.map50_95 == pytest.approx(ap.mean(), abs=1e-12)
    assert np.abs(np.array([c.pr_precision for c in m.evaluated]) - pr).max() < 1e-12
    assert 0.05 < m.map50 < 0.95  # the case is neither trivial nor hopeless
