"""Triage of an anomaly model's frame confidence (0.5 = the model's threshold) with the band
``triage.anomaly`` (pass_below 0.4, defect_at 0.7 unless stated)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.config.anomaly import AnomalyBandConfig
from agent.config.models import TriageConfig
from agent.core.detections import Detection, PrefilterResult
from agent.triage.policy import decide

BAND = TriageConfig()
REGION = Detection("anomaly", 0, 0.8, (10.0, 20.0, 30.0, 40.0))


@pytest.mark.parametrize(("confidence", "regions", "verdict", "tags"), [
    (0.0, (), "pass", []),  # nothing unusual
    (0.399, (), "pass", []),  # just under pass_below
    (0.4, (), "uncertain", []),  # exactly pass_below: escalated, no region over the threshold yet
    (0.6, (REGION,), "uncertain", [("uncertain", REGION.box)]),  # over the threshold, under defect_at
    (0.7, (REGION,), "defect", [("accepted", REGION.box)]),  # exactly defect_at: its region accepted
    (0.9, (), "defect", [("accepted", None)]),  # no region: one frame-level tag
])
def test_anomaly_band(confidence: float, regions: tuple[Detection, ...], verdict: str,
                      tags: list[tuple[str, tuple[float, ...] | None]]) -> None:
    result = PrefilterResult("m@1", regions, 1.0, task="anomaly", anomaly=confidence)
    decision = decide(result, BAND)
    assert decision.verdict == verdict
    assert [(t.state, t.detection.box) for t in decision.tags] == tags
    assert all(t.detection.label == "anomaly" for t in decision.tags)


def test_the_frame_level_tag_carries_the_frame_confidence() -> None:
    decision = decide(PrefilterResult("m@1", (), 1.0, task="anomaly", anomaly=0.95), BAND)
    assert decision.tags[0].detection.confidence == pytest.approx(0.95)


def test_an_anomaly_result_without_its_confidence_is_refused() -> None:
    with pytest.raises(ValueError, match="anomaly confidence"):
        decide(PrefilterResult("m@1", (), 1.0, task="anomaly"), BAND)


def test_a_band_upside_down_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"anomaly.pass_below \(0.8\) must not be above"):
        AnomalyBandConfig(pass_below=0.8, defect_at=0.6)
    narrow = TriageConfig(anomaly={"pass_below": 0.5, "defect_at": 0.5})  # no uncertain band at all
    assert decide(PrefilterResult("m@1", (), 1.0, task="anomaly", anomaly=0.5), narrow).verdict == "defect"
