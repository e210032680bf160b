"""Triage on hand-picked confidences (accept 0.6, reject 0.25, margin 0.2 unless stated):
the detector's band, and the classifier's top-1 probability and margin."""

from __future__ import annotations

import pytest

from agent.config.models import TriageConfig
from agent.core.detections import Detection, PrefilterResult
from agent.triage.policy import decide, triage, triage_classification

BAND = TriageConfig(accept=0.6, reject=0.25)


def det(conf: float, label: str = "scratch") -> Detection:
    return Detection(label=label, class_id=0, confidence=conf, box=(0.0, 0.0, 1.0, 1.0))


@pytest.mark.parametrize(
    ("confidences", "verdict", "states"),
    [
        ([], "pass", []),  # nothing found
        ([0.1, 0.2], "pass", []),  # all below reject: dropped
        ([0.25], "uncertain", ["uncertain"]),  # exactly reject: kept, in the band
        ([0.599], "uncertain", ["uncertain"]),  # just under accept
        ([0.6], "defect", ["accepted"]),  # exactly accept: trusted
        ([0.3, 0.9], "defect", ["accepted", "uncertain"]),  # a sure defect wins; tags best first
        ([0.1, 0.4, 0.5], "uncertain", ["uncertain", "uncertain"]),  # the 0.1 is dropped
    ],
)
def test_band(confidences, verdict, states):
    decision = triage([det(c) for c in confidences], BAND)
    assert decision.verdict == verdict
    assert [t.state for t in decision.tags] == states
    assert decision.needs_escalation == (verdict == "uncertain")


def test_band_collapsed_to_one_threshold_never_gives_uncertain():
    band = TriageConfig(accept=0.5, reject=0.5)
    assert triage([det(0.49)], band).verdict == "pass"
    assert triage([det(0.5)], band).verdict == "defect"


def test_reject_above_accept_is_a_config_error():
    with pytest.raises(ValueError, match=r"reject \(0.7\) must not be above accept \(0.5\)"):
        TriageConfig(accept=0.5, reject=0.7)


# -- classifiers: top-1 probability and margin (accept 0.6, margin 0.2, reject 0.25 unless stated) ----------------

NAMES = ("pass", "scratch", "hole", "stain", "missing")


def probs(*values: float, names: tuple[str, ...] = NAMES) -> tuple[tuple[str, float], ...]:
    return tuple(zip(names, values, strict=True))


@pytest.mark.parametrize(
    ("values", "verdict", "tags"),
    [
        ((0.9, 0.05, 0.05, 0.0, 0.0), "pass", []),  # sure pass: no tags
        ((0.2, 0.7, 0.1, 0.0, 0.0), "defect", [("scratch", "accepted")]),  # sure defect: top class, accepted
        ((0.4, 0.0, 0.6, 0.0, 0.0), "defect", [("hole", "accepted")]),  # exactly accept, exactly margin 0.2
        ((0.41, 0.0, 0.59, 0.0, 0.0), "uncertain", [("hole", "uncertain")]),  # just under accept; pass is no tag
        ((0.55, 0.45, 0.0, 0.0, 0.0), "uncertain", [("scratch", "uncertain")]),  # pass unsure: the defect is the tag
        ((0.3, 0.2, 0.2, 0.15, 0.15), "uncertain", []),  # spread thin: nothing reaches reject, still uncertain
        ((0.1, 0.45, 0.45, 0.0, 0.0), "uncertain", [("scratch", "uncertain"), ("hole", "uncertain")]),  # tie: lower id
        ((0.7, 0.0, 0.0, 0.3, 0.0), "pass", []),  # a decided pass drops the runner-up defect
    ],
)
def test_classifier_band(values, verdict, tags):
    decision = triage_classification(probs(*values), BAND)
    assert decision.verdict == verdict
    assert [(t.detection.label, t.state) for t in decision.tags] == tags
    assert all(t.detection.box is None for t in decision.tags)
    assert decision.needs_escalation == (verdict == "uncertain")


def test_classifier_margin_decides_between_two_confident_looking_classes():
    # top-1 0.65 is above accept, but 0.35 behind it is only 0.3 away: fine at margin 0.2, not at 0.4
    p = probs(0.0, 0.35, 0.0, 0.0, 0.65)
    assert triage_classification(p, TriageConfig(accept=0.6, reject=0.25, margin=0.2)).verdict == "defect"
    assert triage_classification(p, TriageConfig(accept=0.6, reject=0.25, margin=0.4)).verdict == "uncertain"


def test_classifier_tie_with_no_margin_goes_to_the_lower_class_id():
    band = TriageConfig(accept=0.5, reject=0.25, margin=0.0)
    decision = triage_classification(probs(0.0, 0.0, 0.5, 0.5, 0.0), band)
    assert decision.verdict == "defect" and decision.tags[0].detection.label == "hole"
    assert decision.tags[0].detection.class_id == 2


def test_classifier_pass_label_is_configurable_and_one_class_models_work():
    band = TriageConfig(pass_label="ok")
    assert triage_classification(probs(0.9, 0.1, names=("ok", "bad")), band).verdict == "pass"
    assert triage_classification(probs(0.9, 0.1, names=("pass", "bad")), band).verdict == "defect"  # "pass" is a class
    assert triage_classification(probs(1.0, names=("ok",)), band).verdict == "pass"  # runner-up counts as 0
    with pytest.raises(ValueError, match="at least one class probability"):
        triage_classification((), BAND)


def test_decide_dispatches_on_the_task():
    detector = PrefilterResult("m@0", (det(0.9),), 1.0)
    assert decide(detector, BAND).verdict == "defect" and decide(detector, BAND).tags[0].detection.box is not None
    classifier = PrefilterResult("m@0", (), 1.0, task="classify", probabilities=probs(0.95, 0.05, 0.0, 0.0, 0.0))
    assert decide(classifier, BAND).verdict == "pass"
    assert classifier.ranked[0] == ("pass", 0.95)


def test_margin_is_checked():
    with pytest.raises(ValueError, match="margin"):
        TriageConfig(margin=1.5)
