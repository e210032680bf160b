"""The INT8 accuracy gate: is a quantized model as good as its FP32 source? Pure logic.

Two checks on one labelled validation set, both models run on the same images:

* the task metric (mAP50 for a detector, top-1 accuracy for a classifier) may
  drop by at most ``max_drop_points`` (points on a 0..100 scale; default 1.0);
* the frame verdicts (pass / defect / uncertain after triage with the same band)
  may differ on at most ``max_verdict_change_pct`` percent of the images.

The verdict check catches what an aggregate metric hides: a model that keeps
its mAP but moves many scores across the triage thresholds changes what the
line sees and how often the VLM is asked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from agent.prefilter.gate_record import GATE_SCHEMA as GATE_SCHEMA  # defined where the agent reads records


@dataclasses.dataclass(frozen=True)
class GateLimits:
    max_drop_points: float = 1.0
    max_verdict_change_pct: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_drop_points <= 100.0:
            raise ValueError(f"max drop {self.max_drop_points}: expected points in 0..100 (default 1.0)")
        if not 0.0 <= self.max_verdict_change_pct <= 100.0:
            raise ValueError(f"max verdict changes {self.max_verdict_change_pct}: expected a percentage in "
                             "0..100 (default 2.0)")


@dataclasses.dataclass(frozen=True)
class GateResult:
    metric: str  # "mAP50" | "accuracy"
    fp32: float  # 0..1
    int8: float  # 0..1
    verdicts_changed: int
    images: int
    limits: GateLimits
    reasons: tuple[str, ...]  # why it was refused; empty when it passed

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def drop_points(self) -> float:
        return (self.fp32 - self.int8) * 100.0

    @property
    def changed_pct(self) -> float:
        return 100.0 * self.verdicts_changed / self.images if self.images else 0.0

    def summary(self) -> str:
        return (f"{self.metric} FP32 {self.fp32:.3f} -> INT8 {self.int8:.3f} "
                f"({-self.drop_points:+.2f} points, limit -{self.limits.max_drop_points:.2f}); "
                f"verdicts changed on {self.verdicts_changed}/{self.images} images "
                f"({self.changed_pct:.1f} %, limit {self.limits.max_verdict_change_pct:.1f} %)")

    def as_json(self) -> dict[str, object]:
        return {
            "passed": self.passed, "metric": self.metric, "fp32": round(self.fp32, 4), "int8": round(self.int8, 4),
            "drop_points": round(self.drop_points, 2),
            "verdicts": {"changed": self.verdicts_changed, "images": self.images,
                         "changed_pct": round(self.changed_pct, 2)},
            "limits": {"max_drop_points": self.limits.max_drop_points,
                       "max_verdict_change_pct": self.limits.max_verdict_change_pct},
            "reasons": list(self.reasons),
        }


def count_changed(fp32_verdicts: Sequence[str], int8_verdicts: Sequence[str]) -> int:
    if len(fp32_verdicts) != len(int8_verdicts):
        raise ValueError(f"verdict lists differ in length: FP32 {len(fp32_verdicts)}, INT8 {len(int8_verdicts)}; "
                         "both models must see the same images")
    return sum(a != b for a, b in zip(fp32_verdicts, int8_verdicts, strict=True))


def judge(metric: str, fp32: float, int8: float, fp32_verdicts: Sequence[str], int8_verdicts: Sequence[str],
          limits: GateLimits) -> GateResult:
    """Compare the two models' numbers against the limits."""
    changed = count_changed(fp32_verdicts, int8_verdicts)
    images = len(fp32_verdicts)
    if images == 0:
        return GateResult(metric, fp32, int8, 0, 0, limits,
                          ("the validation set has no images; the gate needs labelled images to compare on",))
    reasons = []
    drop = (fp32 - int8) * 100.0
    if drop > limits.max_drop_points + 1e-9:
        reasons.append(f"INT8 {metric} {int8:.3f} is {drop:.2f} points below FP32 {fp32:.3f}; "
                       f"at most {limits.max_drop_points:.2f} points are allowed")
    pct = 100.0 * changed / images
    if pct > limits.max_verdict_change_pct + 1e-9:
        reasons.append(f"INT8 changes the frame verdict on {changed} of {images} images ({pct:.1f} %); "
                       f"at most {limits.max_verdict_change_pct:.1f} % are allowed")
    return GateResult(metric, fp32, int8, changed, images, limits, tuple(reasons))
