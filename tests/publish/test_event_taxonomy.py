"""Tag events with a taxonomy: canonical label, code and severity beside every raw label, schema-valid."""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from collections.abc import Callable

import pytest

from agent.config.taxonomy import load_taxonomy
from agent.core.event import EscalationOutcome, TagEvent, VlmDefect
from agent.escalation.merge import VlmAnswer, merge
from agent.ops.metrics import EventMetrics
from agent.publish.schema import validate_payload
from agent.runtime.fanout import EventFanout
from agent.taxonomy import Taxonomy, TaxonomyFile

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "systemd" / "taxonomy.example.yaml"
ANSWERED = EscalationOutcome("answered", model="llava:7b", latency_ms=845.2, description="A scratch.")
EventFactory = Callable[..., TagEvent]


def answered(event: TagEvent) -> TagEvent:
    """The uncertain event (prefilter: dent 0.42) with the VLM's answer: a scratch and a metal part."""
    answer = VlmAnswer(verdict="defect", tags=(("Scratch", 0.83), ("metal part", 0.97)),
                       defects=(VlmDefect("Missing_Piece", "upper left", "high"), VlmDefect("blob", "centre", "low")),
                       description="A scratch.", model="llava:7b", vlm_ms=812.0, gateway_ms=830.5)
    return merge(event, ANSWERED, answer)


def test_every_tag_and_defect_gets_its_canonical_label(event_factory: EventFactory) -> None:
    event = dataclasses.replace(event_factory(verdict="uncertain"), taxonomy=load_taxonomy(EXAMPLE))
    payload = json.loads(answered(event).to_json())
    assert validate_payload(payload) == []
    assert [(t["label"], t["canonical"], t["code"], t["severity"]) for t in payload["tags"]] == [
        ("metal part", None, None, None),  # unmapped: kept, with its raw label
        ("Scratch", "SURFACE_SCRATCH", "D-101", "low"),  # the raw word kept as the VLM wrote it
        ("dent", "DEFORMATION", "D-201", "medium"),  # the prefilter's tag too
    ]
    assert payload["escalation"]["defects"] == [
        {"type": "Missing_Piece", "location": "upper left", "severity": "high",
         "canonical": "MISSING_PART", "code": "D-301", "canonical_severity": "critical"},
        {"type": "blob", "location": "centre", "severity": "low",
         "canonical": None, "code": None, "canonical_severity": None}]
    assert answered(event).unmapped_labels() == ["metal part", "blob"]


def test_without_a_taxonomy_the_payload_is_unchanged(event_factory: EventFactory) -> None:
    payload = answered(event_factory(verdict="uncertain")).to_payload()
    assert validate_payload(json.loads(json.dumps(payload))) == []
    assert all(set(t) <= {"label", "confidence", "box", "state", "source"} for t in payload["tags"])
    assert set(payload["escalation"]["defects"][0]) == {"type", "location", "severity"}
    assert answered(event_factory(verdict="uncertain")).unmapped_labels() == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("canonical", ""),  # an empty label is no label: null says unmapped
        ("severity", "severe"),  # not a severity of the taxonomy
        ("code", 101),  # codes are strings
    ],
)
def test_the_schema_checks_the_new_fields(event_factory: EventFactory, field: str, value: object) -> None:
    event = dataclasses.replace(event_factory(verdict="uncertain"), taxonomy=load_taxonomy(EXAMPLE))
    payload = json.loads(answered(event).to_json())
    payload["tags"][0][field] = value
    assert any(p.startswith(f"$.tags[0].{field}") for p in validate_payload(payload)), validate_payload(payload)


class _Sink:
    def publish_event(self, event: TagEvent) -> int:
        return 1


def test_the_event_metrics_count_unmapped_words_and_log_each_once(
    event_factory: EventFactory, caplog: pytest.LogCaptureFixture,
) -> None:
    taxonomy = Taxonomy.from_file(TaxonomyFile.model_validate({"labels": [  # no "dent" here
        {"label": "SCRATCH", "code": "S-1", "severity": "low"},
        {"label": "MISSING", "code": "M-1", "severity": "high", "synonyms": ["missing piece"]}]}))
    metrics = EventMetrics()
    metered = EventFanout(_Sink(), [metrics])  # the metrics listen to the events the fan-out publishes
    first = dataclasses.replace(event_factory(verdict="uncertain"), taxonomy=taxonomy)
    with caplog.at_level(logging.WARNING, logger="agent.ops.metrics"):
        metered.publish_event(answered(first))
        metered.publish_event(answered(dataclasses.replace(event_factory(verdict="uncertain", sequence=2),
                                                           taxonomy=taxonomy)))
        # a revision 2 counts its VLM words only: its prefilter tags were counted with revision 1
        late = dataclasses.replace(answered(first), revision=2, decision=dataclasses.replace(
            first.decision, tags=first.decision.tags * 2))
        metered.publish_event(late)
        metered.publish_event(dataclasses.replace(first, taxonomy=None))  # no taxonomy: nothing to count
    assert metrics.unmapped_counts() == {"metal part": 3, "blob": 3, "dent": 2}
    logged = [r.getMessage() for r in caplog.records if "not in the taxonomy" in r.getMessage()]
    assert len(logged) == 3 and ["'dent'" in logged[0], "'metal part'" in logged[1], "'blob'" in logged[2]] == [
        True, True, True]


def test_the_unmapped_words_kept_by_name_are_bounded(event_factory: EventFactory,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.ops import metrics as metrics_agent

    monkeypatch.setattr(metrics_agent, "MAX_UNMAPPED_WORDS", 2)
    taxonomy = Taxonomy.from_file(TaxonomyFile.model_validate({"labels": [
        {"label": "SCRATCH", "code": "S-1", "severity": "low"}]}))
    metrics = EventMetrics()
    metered = EventFanout(_Sink(), [metrics])  # the metrics listen to the events the fan-out publishes
    metered.publish_event(answered(dataclasses.replace(event_factory(verdict="uncertain"), taxonomy=taxonomy)))
    counts = metrics.unmapped_counts()
    assert len(counts) == 3 and counts[metrics_agent.OTHER_UNMAPPED] >= 1  # 2 by name, the rest together
