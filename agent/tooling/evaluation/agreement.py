"""How far two detectors' boxes on the same frames agree (benchmarks: agent vs ultralytics, GPU vs CPU).

A frame's boxes are rows ``[x1, y1, x2, y2, class_id, confidence]``, frames keyed by their number as
text. Boxes are matched one to one per frame, same class and IoU at or above ``match_iou``, best IoU
first (greedy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from agent.prefilter.yolo_decode import iou_one_to_many

__all__ = ["BoxRows", "box_agreement"]

BoxRows = Mapping[str, Sequence[Sequence[float]]]


def box_agreement(a: BoxRows, b: BoxRows, match_iou: float = 0.5) -> dict[str, float]:
    """``matched``, ``only_a``, ``only_b`` (box counts over all frames), the IoU of matched pairs (``mean_iou``,
    ``min_iou``) and their confidence differences (``mean_conf_diff``, ``max_conf_diff``; NaN when none
    matched)."""
    if not 0.0 < match_iou <= 1.0:
        raise ValueError(f"match_iou must be in (0, 1], got {match_iou}")
    matched = only_a = only_b = 0
    ious: list[float] = []
    conf_diffs: list[float] = []
    for key in sorted(set(a) | set(b), key=int):
        mine = np.asarray(a.get(key, []), np.float64).reshape(-1, 6)
        theirs = np.asarray(b.get(key, []), np.float64).reshape(-1, 6)
        pairs = []
        for i in range(len(mine)):
            if len(theirs):
                iou = iou_one_to_many(mine[i, :4], theirs[:, :4])
                pairs += [(float(iou[j]), i, j) for j in range(len(theirs))
                          if iou[j] >= match_iou and mine[i, 4] == theirs[j, 4]]
        used_a: set[int] = set()
        used_b: set[int] = set()
        for iou_value, i, j in sorted(pairs, reverse=True):
            if i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            ious.append(iou_value)
            conf_diffs.append(abs(mine[i, 5] - theirs[j, 5]))
        matched += len(used_a)
        only_a += len(mine) - len(used_a)
        only_b += len(theirs) - len(used_b)
    return {"matched": matched, "only_a": only_a, "only_b": only_b,
            "mean_iou": float(np.mean(ious)) if ious else float("nan"),
            "min_iou": float(np.min(ious)) if ious else float("nan"),
            "mean_conf_diff": float(np.mean(conf_diffs)) if conf_diffs else float("nan"),
            "max_conf_diff": float(np.max(conf_diffs)) if conf_diffs else float("nan")}
