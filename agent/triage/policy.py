"""Triage: turn a frame's detections into a verdict. Pure logic, no I/O.

For a detector, with a per-camera band ``reject <= accept``:

* a detection with confidence >= ``accept`` is trusted (state ``accepted``);
* one below ``reject`` is dropped;
* one in between is ``uncertain``.

The frame's verdict: ``defect`` if any detection is accepted (a defect is known,
whatever else is unsure), else ``uncertain`` if any is uncertain, else ``pass``.
Every class the shipped detector knows is a defect class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Literal

from agent.config.models import TriageConfig
from agent.prefilter.detection import Detection

Verdict = Literal["pass", "defect", "uncertain"]
TagState = Literal["accepted", "uncertain"]


@dataclasses.dataclass(frozen=True)
class TriagedTag:
    detection: Detection
    state: TagState


@dataclasses.dataclass(frozen=True)
class TriageDecision:
    verdict: Verdict
    tags: tuple[TriagedTag, ...]  # kept detections, highest confidence first

    @property
    def needs_escalation(self) -> bool:
        return self.verdict == "uncertain"


def triage(detections: Iterable[Detection], band: TriageConfig) -> TriageDecision:
    kept: list[TriagedTag] = []
    for det in sorted(detections, key=lambda d: -d.confidence):
        if det.confidence >= band.accept:
            kept.append(TriagedTag(det, "accepted"))
        elif det.confidence >= band.reject:
            kept.append(TriagedTag(det, "uncertain"))
    verdict: Verdict
    if any(t.state == "accepted" for t in kept):
        verdict = "defect"
    elif kept:
        verdict = "uncertain"
    else:
        verdict = "pass"
    return TriageDecision(verdict=verdict, tags=tuple(kept))
