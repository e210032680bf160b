"""Triage: turn a frame's prefilter result into a verdict. Pure logic, no I/O.
:func:`decide` is the entry point; it dispatches on the result's task.

For a detector (:func:`triage`), with a per-camera band ``reject <= accept``:

* a detection with confidence >= ``accept`` is trusted (state ``accepted``);
* one below ``reject`` is dropped;
* one in between is ``uncertain``.

The frame's verdict: ``defect`` if any detection is accepted (a defect is known,
whatever else is unsure), else ``uncertain`` if any is uncertain, else ``pass``.
Every class the shipped detector knows is a defect class.

For a classifier (:func:`triage_classification`), with top-1 probability ``p1``
and the runner-up's ``p2``: the frame is decided when ``p1 >= accept`` and
``p1 - p2 >= margin`` (both inclusive): ``pass`` when the top class is
``pass_label`` (no tags), else ``defect`` with one accepted tag, the top class
(no box). Otherwise it is ``uncertain``, and every defect class with probability
>= ``reject`` becomes an uncertain tag, best first (none when the model spreads
its belief thinly; the frame is uncertain all the same). A one-class model has
``p2 = 0``.

For an anomaly model (:func:`triage_anomaly`), with the frame's anomaly
confidence ``a`` (0.5 at the model's threshold) and the band ``triage.anomaly``:
``a < pass_below`` passes (no tags); ``a >= defect_at`` is a defect, its
regions (``anomaly`` tags with boxes) accepted, or one frame-level ``anomaly``
tag when no cell of the map is over the threshold; in between the frame is
uncertain and its regions are uncertain tags.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agent.config.models import TriageConfig
from agent.core.decision import TriageDecision, TriagedTag, Verdict
from agent.core.detections import Detection, PrefilterResult

ANOMALY_LABEL = "anomaly"  # as agent.prefilter.anomaly labels its regions (a stage does not import another)


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


_MARGIN_SLACK = 1e-9  # so that 0.6 - 0.4 (0.19999999999999996 in floats) meets a margin of 0.2


def triage_classification(probabilities: Sequence[tuple[str, float]], band: TriageConfig) -> TriageDecision:
    """Verdict from a classifier's (class name, probability) pairs, in class-id order."""
    if not probabilities:
        raise ValueError("a classifier result needs at least one class probability, got none")
    order = sorted(range(len(probabilities)), key=lambda i: -probabilities[i][1])  # stable: ties -> lower id
    best = order[0]
    label, p1 = probabilities[best]
    p2 = probabilities[order[1]][1] if len(order) > 1 else 0.0
    if p1 >= band.accept and p1 - p2 >= band.margin - _MARGIN_SLACK:
        if label == band.pass_label:
            return TriageDecision(verdict="pass", tags=())
        return TriageDecision(verdict="defect", tags=(TriagedTag(Detection(label, best, p1, None), "accepted"),))
    tags = tuple(TriagedTag(Detection(probabilities[i][0], i, probabilities[i][1], None), "uncertain")
                 for i in order if probabilities[i][0] != band.pass_label and probabilities[i][1] >= band.reject)
    return TriageDecision(verdict="uncertain", tags=tags)


def triage_anomaly(confidence: float, regions: Sequence[Detection], band: TriageConfig) -> TriageDecision:
    """Verdict from an anomaly model's frame confidence and its regions (best first)."""
    if confidence < band.anomaly.pass_below:
        return TriageDecision(verdict="pass", tags=())
    if confidence >= band.anomaly.defect_at:
        found = tuple(regions) or (Detection(ANOMALY_LABEL, 0, confidence, None),)
        return TriageDecision(verdict="defect", tags=tuple(TriagedTag(d, "accepted") for d in found))
    return TriageDecision(verdict="uncertain", tags=tuple(TriagedTag(d, "uncertain") for d in regions))


def decide(result: PrefilterResult, band: TriageConfig) -> TriageDecision:
    """The verdict for one frame's prefilter result, by the rule of its task."""
    if result.task == "anomaly":
        if result.anomaly is None:
            raise ValueError(f"an anomaly result needs its anomaly confidence; model {result.model_id} gave none")
        return triage_anomaly(result.anomaly, result.detections, band)
    if result.task == "classify":
        return triage_classification(result.probabilities, band)
    return triage(result.detections, band)
