"""YOLOv8 detection output decoding and per-class NMS. Pure numpy.

The ONNX output is ``(batch, 4 + nc, N)``: rows 0-3 are cx, cy, w, h in
model-input pixels, rows 4.. are per-class scores already through a sigmoid; no
objectness column. For each candidate we take the best class (single label per
box, as ultralytics' predictor does), keep scores above ``min_score``, and run
NMS per class.

NMS ties: candidates are ordered by score with a *stable* sort, so of two boxes
with equal scores the one that comes first in the model output wins.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class RawDetections:
    """Decoded detections of one image, in model-input pixels, best first."""

    boxes: np.ndarray  # (K, 4) float32 xyxy
    scores: np.ndarray  # (K,) float32
    class_ids: np.ndarray  # (K,) int64


def expected_anchor_count(input_w: int, input_h: int, strides: tuple[int, ...] = (8, 16, 32)) -> int:
    """Number of anchors YOLOv8 emits for this input: sum over strides of (H/s)*(W/s)."""
    return sum((input_h // s) * (input_w // s) for s in strides)


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    out = np.empty_like(xywh)
    half_w, half_h = xywh[:, 2] / 2, xywh[:, 3] / 2
    out[:, 0] = xywh[:, 0] - half_w
    out[:, 1] = xywh[:, 1] - half_h
    out[:, 2] = xywh[:, 0] + half_w
    out[:, 3] = xywh[:, 1] + half_h
    return out


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box (4,) against many (M, 4)."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.maximum(ix2 - ix1, 0) * np.maximum(iy2 - iy1, 0)  # np.clip(.., 0, None) is this, behind 3 calls
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int) -> np.ndarray:
    """Greedy NMS. Returns indices into ``boxes`` of the kept boxes, best first.
    A box is suppressed when its IoU with a kept box is *greater than* the threshold."""
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"boxes {boxes.shape} and scores {scores.shape} disagree on the count")
    order = (-scores).argsort(kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_keep:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[iou_one_to_many(boxes[i], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_yolov8(
    output: np.ndarray, num_classes: int, *, min_score: float, iou_threshold: float, max_detections: int
) -> RawDetections:
    """Decode one image's output of shape (4 + nc, N) into NMS'd detections."""
    if output.ndim != 2 or output.shape[0] != 4 + num_classes:
        raise ValueError(
            f"expected one image's YOLOv8 output of shape (4 + {num_classes}, N), got {output.shape}")
    # best score per candidate first, the class only of those above the threshold (few of the N)
    scores_all = output[4:]  # (nc, N)
    best = scores_all.max(axis=0)
    picked = (best > min_score).nonzero()[0]  # np.flatnonzero's result, without its wrappers
    if not picked.size:
        return RawDetections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    class_ids = scores_all[:, picked].argmax(axis=0).astype(np.int64)
    scores = best[picked].astype(np.float32)
    boxes = xywh_to_xyxy(output[:4, picked].T.astype(np.float32))
    if boxes.shape[0] == 1:
        return RawDetections(boxes, scores, class_ids)
    # per-class NMS in one pass: shift each class's boxes to its own region
    offset = class_ids[:, None].astype(np.float32) * 8192.0
    keep = nms(boxes + offset, scores, iou_threshold, max_detections)
    return RawDetections(boxes[keep], scores[keep], class_ids[keep])
