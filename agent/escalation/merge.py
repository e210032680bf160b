"""The merge rule: the VLM's answer and the prefilter's decision make the published verdict. Pure logic.

Only uncertain frames are escalated, so the prefilter's verdict is ``uncertain``
and its tags are in the uncertain band. The rule, in order:

1. **No answer** (escalation status ``unavailable``, ``timeout``, ``rejected``,
   ``rate_limited``, ``invalid_answer``): the prefilter's verdict and tags stand;
   ``decided_by: prefilter``.
2. **A defect the prefilter is sure of stays a defect.** If any prefilter tag is
   ``accepted`` (not the case for frames the triage escalates today; the rule is
   total so that a different triage cannot let the VLM clear a trusted defect),
   the verdict is ``defect`` and ``decided_by: prefilter``; the VLM's tags are
   added as evidence.
3. **Otherwise the VLM decides** (status ``answered``, or ``cached`` when a
   near-duplicate frame's answer is reused): the verdict is the VLM's (``pass``,
   ``defect``, or ``uncertain`` when it could not tell either) and
   ``decided_by: vlm``.

Tags: the prefilter's tags are always kept as they were (``source: prefilter``,
with their boxes: they show where the prefilter looked). The VLM's tags are
added with ``source: vlm``, no box, and state ``accepted`` when the VLM gave a
pass/defect verdict or ``uncertain`` when it could not tell. The answer's
``defects`` (type, location in words, severity) are not tags (they have no
confidence): they are published as ``escalation.defects``, next to the VLM's
``escalation.description``.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Literal

from agent.core.decision import Verdict
from agent.core.event import EscalationOutcome, TagEvent, VlmDefect, VlmTag

__all__ = ["VlmAnswer", "VlmDefect", "merge"]


@dataclasses.dataclass(frozen=True)
class VlmAnswer:
    """The gateway's answer for one frame (``DescribeResponse`` in agent terms)."""

    verdict: Verdict
    tags: tuple[tuple[str, float], ...]  # (label, confidence 0..1)
    defects: tuple[VlmDefect, ...]
    description: str
    model: str
    vlm_ms: float  # Ollama's own time
    gateway_ms: float  # the gateway's time, queueing included
    notes: tuple[str, ...] = ()  # what the gateway changed to answer (crops left out to fit the context)


def merge(
    event: TagEvent,
    outcome: EscalationOutcome,
    answer: VlmAnswer | None,
    *,
    revision: int = 1,
    now: datetime.datetime | None = None,
) -> TagEvent:
    """``event`` (the prefilter's, as the inference thread built it) with the escalation's ``outcome``
    merged in by the module's rule; ``answer`` is given for ``answered`` and ``cached`` outcomes."""
    if (answer is None) != (outcome.status not in ("answered", "cached")):
        raise ValueError(f"an answer goes with status answered or cached, not {outcome.status!r}")
    if revision < 1:
        raise ValueError(f"revision starts at 1, got {revision}")
    verdict: Verdict = event.decision.verdict
    decided_by: Literal["prefilter", "vlm"] = "prefilter"
    vlm_tags: tuple[VlmTag, ...] = ()
    vlm_defects: tuple[VlmDefect, ...] = ()
    if answer is not None:
        vlm_defects = answer.defects
        state: Literal["accepted", "uncertain"] = "uncertain" if answer.verdict == "uncertain" else "accepted"
        vlm_tags = tuple(VlmTag(label, _unit(confidence), state) for label, confidence in answer.tags if label)
        if any(t.state == "accepted" for t in event.decision.tags):
            verdict = "defect"
        else:
            verdict, decided_by = answer.verdict, "vlm"
    return dataclasses.replace(
        event, verdict=verdict, decided_by=decided_by, vlm_tags=vlm_tags, vlm_defects=vlm_defects,
        escalation=outcome, revision=revision,
        created_at=now or datetime.datetime.now(datetime.timezone.utc))


def _unit(value: float) -> float:
    """A confidence clamped to 0..1 (NaN -> 0): the gateway checks it, the payload schema requires it."""
    return 0.0 if math.isnan(value) else min(1.0, max(0.0, value))
