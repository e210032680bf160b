"""YOLOv8 output decoding and NMS on hand-made outputs."""

from __future__ import annotations

import numpy as np
import pytest

from agent.prefilter.yolo_decode import decode_yolov8, expected_anchor_count, iou_one_to_many, nms


def make_output(rows: list[tuple[float, float, float, float, list[float]]]) -> np.ndarray:
    """(4 + nc, N) from (cx, cy, w, h, scores) anchors."""
    return np.array([[cx, cy, w, h, *scores] for cx, cy, w, h, scores in rows], np.float32).T


def test_anchor_count_matches_ultralytics_exports():
    assert expected_anchor_count(320, 320) == 2100  # 40*40 + 20*20 + 10*10
    assert expected_anchor_count(640, 640) == 8400


def test_iou_hand_worked():
    # boxes 20x10 shifted by 2 px: intersection 18*10 = 180, union 200+200-180 = 220
    got = iou_one_to_many(np.array([40, 45, 60, 55.0]), np.array([[42, 45, 62, 55.0], [100, 100, 110, 110.0]]))
    assert got == pytest.approx([180 / 220, 0.0])


def test_decode_xywh_to_xyxy_best_class_and_per_class_nms():
    out = make_output([
        (50, 50, 20, 10, [0.9, 0.1]),  # -> class 0 box (40,45,60,55), kept
        (52, 50, 20, 10, [0.8, 0.2]),  # same class, IoU 0.818 > 0.7 -> suppressed
        (52, 50, 20, 10, [0.1, 0.85]),  # class 1: other class, not suppressed by class 0
        (200, 200, 8, 8, [0.04, 0.05]),  # best score 0.05 is not > min_score 0.05 -> dropped
    ])
    raw = decode_yolov8(out, 2, min_score=0.05, iou_threshold=0.7, max_detections=10)
    assert raw.class_ids.tolist() == [0, 1]
    assert raw.scores == pytest.approx([0.9, 0.85])
    assert raw.boxes[0] == pytest.approx([40, 45, 60, 55])
    assert raw.boxes[1] == pytest.approx([42, 45, 62, 55])


def test_iou_exactly_at_threshold_is_kept():
    # IoU 180/220 = 0.818..., threshold equal to it: suppression needs IoU > threshold
    out = make_output([(50, 50, 20, 10, [0.9]), (52, 50, 20, 10, [0.8])])
    raw = decode_yolov8(out, 1, min_score=0.0, iou_threshold=180 / 220, max_detections=10)
    assert len(raw.scores) == 2


def test_nms_tie_keeps_the_first_in_output_order():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.5, 0.5, 0.5], np.float32)
    assert nms(boxes, scores, 0.5, 10).tolist() == [0, 2]  # equal scores: stable order, 1 loses to 0


def test_max_detections_caps_the_result():
    out = make_output([(10 + 30 * i, 10, 8, 8, [0.9 - 0.01 * i]) for i in range(10)])
    raw = decode_yolov8(out, 1, min_score=0.1, iou_threshold=0.5, max_detections=3)
    assert raw.scores == pytest.approx([0.9, 0.89, 0.88])


def test_nothing_above_min_score_gives_empty_arrays():
    raw = decode_yolov8(make_output([(10, 10, 5, 5, [0.01, 0.02])]), 2, min_score=0.25,
                        iou_threshold=0.7, max_detections=10)
    assert raw.boxes.shape == (0, 4) and raw.scores.shape == (0,) and raw.class_ids.shape == (0,)


def test_wrong_output_shape_names_expected_shape():
    with pytest.raises(ValueError, match=r"expected one image's YOLOv8 output of shape \(4 \+ 2, N\), got \(5, 3\)"):
        decode_yolov8(np.zeros((5, 3), np.float32), 2, min_score=0.1, iou_threshold=0.5, max_detections=5)


def test_iou_is_bit_for_bit_the_clip_formula_also_for_disjoint_degenerate_and_nan_boxes() -> None:
    # the overlap is clamped at 0 by np.maximum, which is what np.clip(x, 0, None) calls: the same float32 bits
    rng = np.random.default_rng(5)
    boxes = rng.uniform(-20, 120, (400, 4)).astype(np.float32)
    boxes[::7, 2:] = boxes[::7, :2]  # zero-area boxes
    boxes[3, 1] = np.nan
    for box in boxes[:40]:
        ix1, iy1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
        ix2, iy2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
        inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        union = (box[2] - box[0]) * (box[3] - box[1]) + areas - inter
        expected = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        got = iou_one_to_many(box, boxes)
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
