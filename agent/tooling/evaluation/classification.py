"""Classification metrics: accuracy, per-class precision/recall/F1, confusion matrix. Pure numpy.

The confusion matrix has rows = true class and columns = predicted class. A class
that is never predicted has precision 0; one that never occurs has recall 0 and
is left out of the macro means (its ``support`` is 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class ClassScores:
    class_id: int
    name: str
    support: int  # samples whose true class this is
    predicted: int  # samples predicted as this class
    precision: float
    recall: float
    f1: float


@dataclasses.dataclass(frozen=True)
class ClassificationMetrics:
    names: tuple[str, ...]
    samples: int
    accuracy: float
    macro_precision: float  # means over classes with support > 0
    macro_recall: float
    macro_f1: float
    classes: tuple[ClassScores, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]  # (nc, nc): rows truth, columns predicted


def _labels(name: str, value: np.ndarray | Sequence[int], nc: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected class ids of shape (N,), got shape {arr.shape}")
    if arr.size and not np.all(np.mod(arr, 1) == 0):
        raise ValueError(f"{name}: class ids must be whole numbers")
    ids = arr.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= nc):
        bad = sorted(set(ids[(ids < 0) | (ids >= nc)].tolist()))
        raise ValueError(f"{name}: class ids must be in 0..{nc - 1} for {nc} classes, got {bad}")
    return ids


def confusion_matrix(truth: np.ndarray | Sequence[int], predicted: np.ndarray | Sequence[int],
                     num_classes: int) -> np.ndarray:
    """(nc, nc) int64 counts, rows truth, columns predicted."""
    if num_classes < 1:
        raise ValueError(f"num_classes: expected at least 1, got {num_classes}")
    t = _labels("truth", truth, num_classes)
    p = _labels("predicted", predicted, num_classes)
    if t.shape != p.shape:
        raise ValueError(f"predicted: expected shape {t.shape} to match truth, got shape {p.shape}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def evaluate_classification(truth: np.ndarray | Sequence[int], predicted: np.ndarray | Sequence[int],
                            names: Sequence[str]) -> ClassificationMetrics:
    """Metrics of top-1 predictions against the true classes (both (N,) class ids)."""
    names = tuple(names)
    matrix = confusion_matrix(truth, predicted, len(names))
    total = int(matrix.sum())
    tp = np.diag(matrix).astype(np.float64)
    support, predicted_n = matrix.sum(1), matrix.sum(0)
    precision = np.divide(tp, predicted_n, out=np.zeros_like(tp), where=predicted_n > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0

    def macro(values: np.ndarray) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    return ClassificationMetrics(
        names=names, samples=total, accuracy=float(tp.sum() / total) if total else 0.0,
        macro_precision=macro(precision), macro_recall=macro(recall), macro_f1=macro(f1),
        classes=tuple(ClassScores(i, n, int(support[i]), int(predicted_n[i]), float(precision[i]),
                                  float(recall[i]), float(f1[i])) for i, n in enumerate(names)),
        confusion_matrix=tuple(tuple(int(v) for v in row) for row in matrix),
    )
