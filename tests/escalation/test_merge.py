"""The merge rule (agent.escalation.merge) and the payloads it makes, validated against the schema."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from agent.config.models import TriageConfig
from agent.core.decision import TriageDecision
from agent.core.event import EscalationOutcome, TagEvent, VlmDefect
from agent.escalation.merge import VlmAnswer, merge
from agent.publish.schema import validate_payload
from agent.triage.policy import triage_classification

EventFactory = Callable[..., TagEvent]


SCRATCH = VlmDefect("scratch", "upper left of the part", "low")


def answer(verdict: str = "defect", tags: tuple[tuple[str, float], ...] = (("scratch", 0.83), ("metal part", 0.97)),
           defects: tuple[VlmDefect, ...] = (SCRATCH,)) -> VlmAnswer:
    return VlmAnswer(verdict=verdict, tags=tags, defects=defects, description="A thin scratch, upper left.",  # type: ignore[arg-type]
                     model="llava:7b", vlm_ms=812.0, gateway_ms=830.5)


ANSWERED = EscalationOutcome("answered", model="llava:7b", latency_ms=845.2, description="A thin scratch, upper left.")


@pytest.mark.parametrize(
    ("vlm_verdict", "verdict", "decided_by", "vlm_state"),
    [
        ("defect", "defect", "vlm", "accepted"),  # the VLM saw a defect
        ("pass", "pass", "vlm", "accepted"),  # the VLM cleared the frame
        ("uncertain", "uncertain", "vlm", "uncertain"),  # the VLM could not tell either: still its call
    ],
)
def test_the_vlm_decides_an_uncertain_frame(event_factory: EventFactory, vlm_verdict: str, verdict: str,
                                            decided_by: str, vlm_state: str) -> None:
    event = event_factory(verdict="uncertain")
    merged = merge(event, ANSWERED, answer(vlm_verdict))
    assert (merged.verdict, merged.decided_by, merged.revision) == (verdict, decided_by, 1)
    assert merged.event_id == event.event_id and merged.captured_at == event.captured_at
    assert merged.created_at >= event.created_at
    payload = merged.to_payload()
    assert validate_payload(json.loads(json.dumps(payload))) == []
    tags = payload["tags"]
    # prefilter's dent 0.42 (with its box) kept; the VLM's tags added without boxes; best first
    assert [(t["label"], t["source"], t["state"]) for t in tags] == [
        ("metal part", "vlm", vlm_state), ("scratch", "vlm", vlm_state), ("dent", "prefilter", "uncertain")]
    assert "box" in tags[2] and "box" not in tags[0]
    assert payload["escalation"] == {"status": "answered", "reason": None, "model": "llava:7b",
                                     "latency_ms": 845.2, "description": "A thin scratch, upper left.",
                                     "defects": [{"type": "scratch", "location": "upper left of the part",
                                                  "severity": "low"}]}


def test_an_answer_without_defects_publishes_an_empty_list(event_factory: EventFactory) -> None:
    payload = merge(event_factory(verdict="uncertain"), ANSWERED, answer("pass", defects=())).to_payload()
    assert payload["escalation"]["defects"] == []
    assert validate_payload(json.loads(json.dumps(payload))) == []


def test_a_bad_severity_in_a_payload_is_a_schema_error(event_factory: EventFactory) -> None:
    payload = json.loads(json.dumps(merge(event_factory(verdict="uncertain"), ANSWERED, answer()).to_payload()))
    payload["escalation"]["defects"][0]["severity"] = "catastrophic"
    assert validate_payload(payload) != []


@pytest.mark.parametrize("status", ["unavailable", "timeout", "rejected", "rate_limited", "invalid_answer"])
def test_without_an_answer_the_prefilter_verdict_stands(event_factory: EventFactory, status: str) -> None:
    event = event_factory(verdict="uncertain")
    merged = merge(event, EscalationOutcome(status, reason="UNAVAILABLE: gone"), None)  # type: ignore[arg-type]
    assert (merged.verdict, merged.decided_by, merged.vlm_tags) == ("uncertain", "prefilter", ())
    payload = merged.to_payload()
    assert validate_payload(payload) == []
    assert payload["escalation"]["status"] == status and payload["escalation"]["reason"] == "UNAVAILABLE: gone"
    assert [t["source"] for t in payload["tags"]] == ["prefilter"]


def test_a_trusted_prefilter_defect_is_never_cleared(event_factory: EventFactory) -> None:
    event = event_factory(verdict="defect")  # scratch 0.91 accepted, dent 0.4 uncertain
    merged = merge(event, ANSWERED, answer("pass"))
    assert (merged.verdict, merged.decided_by) == ("defect", "prefilter")
    assert {t["source"] for t in merged.to_payload()["tags"]} == {"prefilter", "vlm"}


def test_cached_answers_merge_like_answered_ones(event_factory: EventFactory) -> None:
    cached = EscalationOutcome("cached", reason="near-duplicate of frame 7", model="llava:7b", description="ok")
    merged = merge(event_factory(verdict="uncertain"), cached, answer("pass", tags=()))
    assert (merged.verdict, merged.decided_by) == ("pass", "vlm")
    assert validate_payload(merged.to_payload()) == []
    assert merged.to_payload()["escalation"]["latency_ms"] is None


def test_revision_two_keeps_the_event_id(event_factory: EventFactory) -> None:
    event = event_factory(verdict="uncertain")
    first = merge(event, EscalationOutcome("timeout", reason="no answer within 2 s"), None)
    update = merge(event, ANSWERED, answer("defect"), revision=2)
    assert (first.revision, update.revision) == (1, 2)
    assert first.event_id == update.event_id and first.sequence == update.sequence
    p1, p2 = first.to_payload(), update.to_payload()
    assert (p1["revision"], p2["revision"]) == (1, 2)
    assert validate_payload(p1) == [] and validate_payload(p2) == []
    assert (p1["verdict"], p2["verdict"]) == ("uncertain", "defect")


def test_classifier_frames_merge_without_boxes(event_factory: EventFactory) -> None:
    decision = triage_classification([("pass", 0.45), ("scratch", 0.4), ("hole", 0.15)], TriageConfig())
    event = dataclasses.replace(event_factory(verdict="uncertain"), decision=decision)
    payload = merge(event, ANSWERED, answer("defect")).to_payload()
    assert validate_payload(payload) == []
    assert all("box" not in t for t in payload["tags"])


def test_vlm_confidences_are_clamped_and_empty_labels_dropped(event_factory: EventFactory) -> None:
    merged = merge(event_factory(verdict="uncertain"), ANSWERED,
                   answer(tags=(("scratch", 1.7), ("", 0.5), ("dust", float("nan")), ("dent", -0.2))))
    assert [(t.label, t.confidence) for t in merged.vlm_tags] == [("scratch", 1.0), ("dust", 0.0), ("dent", 0.0)]
    assert validate_payload(merged.to_payload()) == []


@pytest.mark.parametrize(
    ("outcome", "given"),
    [
        (ANSWERED, None),  # answered without an answer
        (EscalationOutcome("timeout"), answer()),  # an answer with a failure status
    ],
)
def test_answer_and_status_must_agree(event_factory: EventFactory, outcome: EscalationOutcome,
                                      given: VlmAnswer | None) -> None:
    with pytest.raises(ValueError, match="an answer goes with status answered or cached"):
        merge(event_factory(verdict="uncertain"), outcome, given)


def test_an_event_without_tags_merges(event_factory: EventFactory) -> None:
    event = dataclasses.replace(event_factory(verdict="uncertain"), decision=TriageDecision("uncertain", ()))
    merged = merge(event, ANSWERED, answer("pass", tags=()))
    assert merged.to_payload()["tags"] == [] and merged.verdict == "pass"
