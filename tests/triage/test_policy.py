"""Triage band on hand-picked confidences (accept 0.6, reject 0.25 unless stated)."""

from __future__ import annotations

import pytest

from agent.config.models import TriageConfig
from agent.prefilter.detection import Detection
from agent.triage.policy import triage

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
