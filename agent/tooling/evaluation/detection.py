"""Detection metrics as ultralytics' detection validator computes them. Pure numpy.

Matching, per image and per class (ultralytics ``BaseValidator.match_predictions``):
predictions are taken in descending score order (a stable sort, so of two equal
scores the earlier one goes first); each takes the not yet matched ground-truth
box of its class with the highest IoU and is a true positive at every threshold
that IoU reaches (``>=``). Each of the 10 IoU thresholds 0.50:0.05:0.95 is
matched separately, and each ground-truth box is matched at most once per
threshold; a second prediction on a box that is already taken is a false positive.

AP per class and threshold: ultralytics 8.4 ``compute_ap``. The PR curve gets
sentinels (recall 0, precision 1) in front and (last recall, 0), (1, 0) behind,
precision becomes its monotone envelope, and the envelope is integrated with
the trapezoidal rule over the 101 recall points 0, 0.01, ..., 1. Because the
envelope is read as 0 *at* the last reached recall, a perfect class scores
0.995, not 1 (ultralytics' well-known ceiling; its mAP50 never exceeds 0.995).

Precision, recall, F1: ultralytics ``ap_per_class``. Per-class precision and
recall curves over 1000 confidences in 0..1, F1 from them, and the one
confidence where the mean F1 over classes (box-smoothed over 10% of the range)
is highest; P, R and F1 are read there for every class.

Classes without ground truth are reported (with how many predictions they got)
but have no P/R/F1/AP and are left out of every mean, as in ultralytics.

The confusion matrix follows ultralytics' ``ConfusionMatrix.process_batch``
(class-agnostic greedy matching, predictions by descending score, each takes
the unmatched box of highest IoU) at the chosen confidence and IoU >= 0.5, but
with rows = truth and columns = prediction; the last row and column are
background (row: predictions on nothing, column: objects that were missed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from agent.prefilter.yolo_decode import iou_one_to_many

IOU_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.round(np.linspace(0.5, 0.95, 10), 2))
"""0.50, 0.55, ..., 0.95 (rounded, so an IoU of exactly 0.6 counts at 0.6)."""

CONFUSION_IOU = 0.5
PR_POINTS = 1000  # points of the P/R/F1-confidence curves and of the stored PR curve (as ultralytics)
_EPS = 1e-16  # ultralytics' eps in ap_per_class
_AP_RECALL = np.linspace(0.0, 1.0, 101)


@dataclasses.dataclass(frozen=True)
class ClassMetrics:
    """One class. The metric fields are None when the class has no ground truth."""

    class_id: int
    name: str
    gt_count: int  # ground-truth boxes of this class
    predictions: int  # predictions of this class at or above the chosen confidence
    precision: float | None  # at the chosen confidence
    recall: float | None
    f1: float | None
    ap50: float | None
    ap50_95: float | None
    ap: tuple[float, ...]  # AP at each of IOU_THRESHOLDS; () without ground truth
    pr_precision: tuple[float, ...]  # precision envelope at DetectionMetrics.pr_recall, IoU 0.5; () without GT


@dataclasses.dataclass(frozen=True)
class DetectionMetrics:
    """Everything one evaluation says. Means are over classes with ground truth."""

    names: tuple[str, ...]
    images: int
    classes: tuple[ClassMetrics, ...]
    map50: float
    map50_95: float
    precision: float  # mean over classes with ground truth, at the chosen confidence
    recall: float
    f1: float
    confidence: float  # the confidence that maximises the (smoothed) mean F1
    iou_thresholds: tuple[float, ...]
    pr_recall: tuple[float, ...]  # x of every pr_precision curve: PR_POINTS recalls 0..1
    confusion_matrix: tuple[tuple[int, ...], ...]  # (nc+1, nc+1): rows truth, columns predicted, last = background
    confusion_confidence: float
    confusion_iou: float

    @property
    def evaluated(self) -> tuple[ClassMetrics, ...]:
        """The classes that have ground truth (the ones the means are over)."""
        return tuple(c for c in self.classes if c.gt_count > 0)

    @property
    def matrix_labels(self) -> tuple[str, ...]:
        return (*self.names, "background")


# -- shape checks --------------------------------------------------------------------------------


def _boxes(name: str, value: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name}: expected xyxy boxes of shape (N, 4), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: boxes must be finite numbers")
    return arr


def _vector(name: str, value: np.ndarray | Sequence[float], n: int, boxes_name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size == 0 and n == 0:
        return arr.reshape(0)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match {boxes_name} of shape ({n}, 4), "
                         f"got shape {arr.shape}")
    return arr


def _class_ids(name: str, value: np.ndarray | Sequence[int], n: int, boxes_name: str, nc: int) -> np.ndarray:
    arr = _vector(name, value, n, boxes_name)
    if arr.size and not np.all(np.mod(arr, 1) == 0):
        raise ValueError(f"{name}: class ids must be whole numbers, got {arr[np.mod(arr, 1) != 0][:3].tolist()}")
    ids = arr.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= nc):
        bad = ids[(ids < 0) | (ids >= nc)]
        raise ValueError(f"{name}: class ids must be in 0..{nc - 1} for {nc} classes, got {sorted(set(bad.tolist()))}")
    return ids


def _scores(name: str, value: np.ndarray | Sequence[float], n: int, boxes_name: str) -> np.ndarray:
    arr = _vector(name, value, n, boxes_name).astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: scores must be finite numbers")
    return arr


# -- building blocks ------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (M, 4) x (N, 4) -> (M, N)."""
    a, b = _boxes("a", a), _boxes("b", b)
    out = np.zeros((a.shape[0], b.shape[0]), np.float64)
    if b.shape[0]:
        for i in range(a.shape[0]):
            out[i] = iou_one_to_many(a[i], b)
    return out


def match_predictions(
    gt_classes: np.ndarray,
    gt_boxes: np.ndarray,
    pred_classes: np.ndarray,
    pred_scores: np.ndarray,
    pred_boxes: np.ndarray,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> np.ndarray:
    """True positives of one image: bool (P, T), row i for prediction i in the order given,
    column t for ``iou_thresholds[t]``. See the module docstring for the rules."""
    thresholds = np.asarray(iou_thresholds, np.float64)
    gt_boxes, pred_boxes = _boxes("gt_boxes", gt_boxes), _boxes("pred_boxes", pred_boxes)
    n_gt, n_pred = gt_boxes.shape[0], pred_boxes.shape[0]
    gt_cls = _vector("gt_classes", gt_classes, n_gt, "gt_boxes").astype(np.int64)
    pred_cls = _vector("pred_classes", pred_classes, n_pred, "pred_boxes").astype(np.int64)
    scores = _scores("pred_scores", pred_scores, n_pred, "pred_boxes")
    correct = np.zeros((n_pred, thresholds.size), bool)
    if n_gt == 0 or n_pred == 0:
        return correct
    order = np.argsort(-scores, kind="stable")
    iou = box_iou(gt_boxes, pred_boxes[order]) * (gt_cls[:, None] == pred_cls[order][None, :])  # (G, P)
    taken = np.zeros((n_gt, thresholds.size), bool)  # ground truth claimed, per threshold
    columns = np.arange(thresholds.size)
    for j in np.flatnonzero((iou >= thresholds.min()).any(0)):
        available = np.where(taken, 0.0, iou[:, j, None])  # (G, T)
        best = available.argmax(0)  # best unclaimed ground truth, per threshold
        hit = available[best, columns] >= thresholds
        correct[order[j]] = hit
        taken[best[hit], columns[hit]] = True
    return correct


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    # numpy's trapezoid (np.trapz before 2.0), written out: same arithmetic on every numpy version
    return float(np.add.reduce(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one PR curve (points in descending score order), as ultralytics 8.4 ``compute_ap``.
    Returns (ap, precision envelope, recall with sentinels)."""
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if recall.shape != precision.shape or recall.ndim != 1:
        raise ValueError(f"recall and precision must be 1-D of one length, got shapes {recall.shape} "
                         f"and {precision.shape}")
    mrec = np.concatenate(([0.0], recall, [recall[-1] if recall.size else 1.0], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    ap = _trapezoid(np.interp(_AP_RECALL, mrec, mpre), _AP_RECALL)
    return ap, mpre, mrec


def smooth(y: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Box filter over ``fraction`` of the length (ultralytics ``smooth``)."""
    nf = round(len(y) * fraction * 2) // 2 + 1  # odd
    pad = np.ones(nf // 2)
    padded = np.concatenate((pad * y[0], y, pad * y[-1]), 0)
    return np.convolve(padded, np.ones(nf) / nf, mode="valid")


@dataclasses.dataclass(frozen=True)
class _Curves:
    ap: np.ndarray  # (nc, T)
    p_curve: np.ndarray  # (nc, PR_POINTS) precision vs confidence
    r_curve: np.ndarray  # (nc, PR_POINTS) recall vs confidence
    pr: np.ndarray  # (nc, PR_POINTS) precision envelope vs recall at the first threshold


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, gt_counts: np.ndarray) -> _Curves:
    """Per-class AP and curves from all predictions of a dataset (ultralytics ``ap_per_class``).
    ``tp``: (N, T) bool; ``conf``, ``pred_cls``: (N,); ``gt_counts``: (nc,). Rows of classes
    without ground truth or without predictions stay 0."""
    nc, n_thr = gt_counts.shape[0], tp.shape[1]
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    x = np.linspace(0.0, 1.0, PR_POINTS)
    ap = np.zeros((nc, n_thr))
    p_curve, r_curve, pr = np.zeros((nc, PR_POINTS)), np.zeros((nc, PR_POINTS)), np.zeros((nc, PR_POINTS))
    for c in range(nc):
        sel = pred_cls == c
        n_l = int(gt_counts[c])
        if n_l == 0 or not sel.any():
            continue
        tpc = tp[sel].cumsum(0)
        fpc = (1 - tp[sel]).cumsum(0)
        recall = tpc / (n_l + _EPS)
        precision = tpc / (tpc + fpc)
        r_curve[c] = np.interp(-x, -conf[sel], recall[:, 0], left=0)  # xp must increase: -conf does
        p_curve[c] = np.interp(-x, -conf[sel], precision[:, 0], left=1)
        for j in range(n_thr):
            ap[c, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j])
            if j == 0:
                pr[c] = np.interp(x, mrec, mpre)
    return _Curves(ap, p_curve, r_curve, pr)


# -- the accumulator --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Image:
    gt_classes: np.ndarray
    gt_boxes: np.ndarray
    pred_classes: np.ndarray
    pred_scores: np.ndarray
    pred_boxes: np.ndarray


class DetectionEvaluator:
    """Collects one image at a time; :meth:`compute` gives the metrics of all of them.
    Keeps every image's boxes (the confusion matrix needs them once the confidence is chosen)."""

    def __init__(self, names: Sequence[str]) -> None:
        if not names:
            raise ValueError("names: expected at least one class name")
        self.names = tuple(names)
        self._images: list[_Image] = []
        self._tp: list[np.ndarray] = []

    @property
    def image_count(self) -> int:
        return len(self._images)

    def add_image(
        self,
        gt_classes: np.ndarray | Sequence[int],
        gt_boxes: np.ndarray | Sequence[Sequence[float]],
        pred_classes: np.ndarray | Sequence[int],
        pred_scores: np.ndarray | Sequence[float],
        pred_boxes: np.ndarray | Sequence[Sequence[float]],
    ) -> None:
        """One image: ground truth (G,) class ids and (G, 4) xyxy boxes; predictions (P,) class ids,
        (P,) scores and (P, 4) xyxy boxes, in the same pixel coordinates."""
        nc = len(self.names)
        gb, pb = _boxes("gt_boxes", gt_boxes), _boxes("pred_boxes", pred_boxes)
        image = _Image(
            gt_classes=_class_ids("gt_classes", gt_classes, gb.shape[0], "gt_boxes", nc),
            gt_boxes=gb,
            pred_classes=_class_ids("pred_classes", pred_classes, pb.shape[0], "pred_boxes", nc),
            pred_scores=_scores("pred_scores", pred_scores, pb.shape[0], "pred_boxes"),
            pred_boxes=pb,
        )
        self._tp.append(match_predictions(image.gt_classes, image.gt_boxes, image.pred_classes,
                                          image.pred_scores, image.pred_boxes))
        self._images.append(image)

    def compute(self) -> DetectionMetrics:
        nc = len(self.names)
        n_thr = len(IOU_THRESHOLDS)
        tp = np.concatenate(self._tp) if self._tp else np.zeros((0, n_thr), bool)
        conf = np.concatenate([im.pred_scores for im in self._images]) if self._images else np.zeros(0)
        pred_cls = (np.concatenate([im.pred_classes for im in self._images]) if self._images
                    else np.zeros(0, np.int64))
        gt_all = (np.concatenate([im.gt_classes for im in self._images]) if self._images
                  else np.zeros(0, np.int64))
        gt_counts = np.bincount(gt_all, minlength=nc)
        curves = ap_per_class(tp, conf, pred_cls, gt_counts)
        present = np.flatnonzero(gt_counts > 0)
        x = np.linspace(0.0, 1.0, PR_POINTS)
        f1_curve = 2 * curves.p_curve * curves.r_curve / (curves.p_curve + curves.r_curve + _EPS)
        best = int(smooth(f1_curve[present].mean(0), 0.1).argmax()) if present.size else 0
        chosen = float(x[best])
        p, r, f1 = curves.p_curve[:, best], curves.r_curve[:, best], f1_curve[:, best]
        at_conf = np.bincount(pred_cls[conf >= chosen], minlength=nc)
        classes = []
        for c, name in enumerate(self.names):
            has_gt = gt_counts[c] > 0
            classes.append(ClassMetrics(
                class_id=c, name=name, gt_count=int(gt_counts[c]), predictions=int(at_conf[c]),
                precision=float(p[c]) if has_gt else None,
                recall=float(r[c]) if has_gt else None,
                f1=float(f1[c]) if has_gt else None,
                ap50=float(curves.ap[c, 0]) if has_gt else None,
                ap50_95=float(curves.ap[c].mean()) if has_gt else None,
                ap=tuple(float(v) for v in curves.ap[c]) if has_gt else (),
                pr_precision=tuple(float(v) for v in curves.pr[c]) if has_gt else (),
            ))
        matrix = np.zeros((nc + 1, nc + 1), np.int64)
        for im in self._images:
            matrix += confusion_matrix_image(im.gt_classes, im.gt_boxes, im.pred_classes, im.pred_scores,
                                             im.pred_boxes, nc, confidence=chosen, iou=CONFUSION_IOU)

        def mean(values: np.ndarray) -> float:
            return float(values[present].mean()) if present.size else 0.0

        return DetectionMetrics(
            names=self.names, images=len(self._images), classes=tuple(classes),
            map50=mean(curves.ap[:, 0]), map50_95=mean(curves.ap.mean(1)),
            precision=mean(p), recall=mean(r), f1=mean(f1), confidence=chosen,
            iou_thresholds=IOU_THRESHOLDS, pr_recall=tuple(float(v) for v in x),
            confusion_matrix=tuple(tuple(int(v) for v in row) for row in matrix),
            confusion_confidence=chosen, confusion_iou=CONFUSION_IOU,
        )


def confusion_matrix_image(
    gt_classes: np.ndarray,
    gt_boxes: np.ndarray,
    pred_classes: np.ndarray,
    pred_scores: np.ndarray,
    pred_boxes: np.ndarray,
    num_classes: int,
    *,
    confidence: float,
    iou: float = CONFUSION_IOU,
) -> np.ndarray:
    """(nc+1, nc+1) counts of one image, rows truth, columns predicted, last = background.
    Predictions below ``confidence`` are ignored; matching is class-agnostic."""
    gt_boxes, pred_boxes = _boxes("gt_boxes", gt_boxes), _boxes("pred_boxes", pred_boxes)
    gt_cls = _class_ids("gt_classes", gt_classes, gt_boxes.shape[0], "gt_boxes", num_classes)
    pred_cls = _class_ids("pred_classes", pred_classes, pred_boxes.shape[0], "pred_boxes", num_classes)
    scores = _scores("pred_scores", pred_scores, pred_boxes.shape[0], "pred_boxes")
    bg = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    keep = scores >= confidence
    pred_cls, pred_boxes, scores = pred_cls[keep], pred_boxes[keep], scores[keep]
    ious = box_iou(gt_boxes, pred_boxes)  # (G, P)
    gt_match = np.full(gt_cls.shape[0], -1)
    for j in np.argsort(-scores, kind="stable"):
        if gt_cls.shape[0] == 0:
            break
        g = int(ious[:, j].argmax())
        if ious[g, j] >= iou:
            gt_match[g] = j
            ious[g] = 0.0  # this ground truth is taken
    for g, cls in enumerate(gt_cls):
        j = int(gt_match[g])
        matrix[cls, pred_cls[j] if j >= 0 else bg] += 1
    matched = set(gt_match[gt_match >= 0].tolist())
    for j, cls in enumerate(pred_cls):
        if j not in matched:
            matrix[bg, cls] += 1
    return matrix
