"""Metrics of an anomaly model (pure numpy): image AUROC, the threshold at a false-reject rate, the recall and
precision it gives, pixel AUROC against box masks, and a text histogram of good vs defective scores.

AUROC is the Mann-Whitney statistic: the chance that a random defective image scores above a random good one
(ties count half); 0.5 is chance, 1.0 separates them perfectly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

HISTOGRAM_BINS = 10
HISTOGRAM_WIDTH = 40


def auroc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for ``labels`` (1 = defective); None without both kinds."""
    y = np.asarray(labels, bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} and {s.shape[0]}")
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    ranks[order] = np.arange(1, len(s) + 1)
    sorted_s = s[order]  # average ranks over ties
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends, strict=True):
        if b - a > 1:
            ranks[order[a:b]] = (a + 1 + b) / 2.0
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def threshold_at_frr(good_scores: Sequence[float] | np.ndarray, frr: float) -> float:
    """The smallest threshold that rejects at most ``frr`` of ``good_scores`` (a score above it is rejected):
    the ``ceil(n * (1 - frr))``-th smallest good score."""
    s = np.sort(np.asarray(good_scores, np.float64).ravel())
    if s.size == 0:
        raise ValueError("no good scores to choose a threshold from")
    if not 0.0 <= frr < 1.0:
        raise ValueError(f"false-reject rate {frr}: expected 0 <= rate < 1")
    k = int(np.ceil(s.size * (1.0 - frr))) - 1
    return float(s[min(max(k, 0), s.size - 1)])


@dataclasses.dataclass(frozen=True)
class AtThreshold:
    threshold: float
    false_reject_rate: float  # good frames scored above the threshold / good frames
    recall: float | None  # defective frames above it / defective frames (None: no defects)
    precision: float | None  # defective among the frames above it (None: nothing above it)


def at_threshold(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                 threshold: float) -> AtThreshold:
    y = np.asarray(labels, bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    flagged = s > threshold
    goods, bads = int((~y).sum()), int(y.sum())
    frr = float((flagged & ~y).sum() / goods) if goods else 0.0
    recall = float((flagged & y).sum() / bads) if bads else None
    precision = float((flagged & y).sum() / flagged.sum()) if flagged.any() else None
    return AtThreshold(threshold, frr, recall, precision)


def box_mask(boxes: np.ndarray, width: int, height: int, map_w: int, map_h: int) -> np.ndarray:
    """(map_h, map_w) bool: the map cells whose centre lies in any box (xyxy, image pixels)."""
    mask = np.zeros((map_h, map_w), bool)
    if len(boxes) == 0:
        return mask
    cx = (np.arange(map_w) + 0.5) * width / map_w
    cy = (np.arange(map_h) + 0.5) * height / map_h
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        mask[np.ix_((cy >= y1) & (cy <= y2), (cx >= x1) & (cx <= x2))] = True
    return mask


def histogram(good: Sequence[float], defective: Sequence[float], bins: int = HISTOGRAM_BINS,
              width: int = HISTOGRAM_WIDTH) -> list[str]:
    """Text lines: one per score bin of 0..1, good frames as ``g`` and defective as ``D``, bars scaled to the
    larger count."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    g, _ = np.histogram(np.clip(good, 0, 1), edges)
    d, _ = np.histogram(np.clip(defective, 0, 1), edges)
    top = max(1, int(max(g.max(initial=0), d.max(initial=0))))
    lines = [f"score      good  defective   (g: good, D: defective; {top} = {width} characters)"]
    for i in range(bins):
        bar = "g" * round(width * g[i] / top) + "|" + "D" * round(width * d[i] / top)
        lines.append(f"{edges[i]:.1f}-{edges[i + 1]:.1f} {g[i]:6d} {d[i]:10d}   {bar}")
    return lines
