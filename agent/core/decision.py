"""Triage's verdict on one frame: which tags were kept and in which state. The rule that makes it is
:mod:`agent.triage.policy`."""

from __future__ import annotations

import dataclasses
from typing import Literal

from agent.core.detections import Detection

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
