"""The tag event JSON Schema against TagEvent.to_payload()."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from agent.core.event import SCHEMA_ID, EscalationOutcome, TagEvent
from agent.publish.schema import SCHEMA_PATH, load_schema, validate_payload

EventFactory = Callable[..., TagEvent]


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema"]["const"] == SCHEMA_ID
    assert SCHEMA_PATH.parts[-3:] == ("proto", "mqtt", "tag-event.v1.schema.json")


def _objects(node: Any, path: str = "$") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append((path, node))
        for key, value in node.items():
            found += _objects(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _objects(value, f"{path}[{i}]")
    return found


def test_every_object_is_closed_and_every_property_described() -> None:
    objects = _objects(load_schema())
    assert len(objects) >= 5  # root, frame, prefilter, escalation, tag
    for path, obj in objects:
        assert obj.get("additionalProperties") is False, path
        for name, prop in obj["properties"].items():
            assert prop.get("description"), f"{path}.properties.{name} has no description"


@pytest.mark.parametrize("verdict", ["pass", "defect", "uncertain"])
def test_built_events_validate(event_factory: EventFactory, verdict: str) -> None:
    payload = event_factory(verdict=verdict).to_payload()
    assert payload["verdict"] == verdict
    assert validate_payload(payload) == []
    assert validate_payload(json.loads(json.dumps(payload))) == []  # what goes over the wire


@pytest.mark.parametrize(
    "outcome",
    [
        EscalationOutcome("answered", model="llava:7b", latency_ms=812.5, description="a scratch, top left"),
        EscalationOutcome("timeout", reason="deadline of 5 s exceeded", latency_ms=5000.0),
        EscalationOutcome("rate_limited", reason="camera budget 6/min spent"),
        EscalationOutcome("cached", model="llava:7b", description="same as frame 41"),
    ],
)
def test_escalation_outcomes_validate(event_factory: EventFactory, outcome: EscalationOutcome) -> None:
    payload = event_factory(verdict="uncertain", escalation=outcome).to_payload()
    assert validate_payload(payload) == []
    if outcome.status == "answered":
        assert payload["decided_by"] == "vlm"


def test_a_tag_without_box_is_valid(event_factory: EventFactory) -> None:
    payload = event_factory().to_payload()
    del payload["tags"][0]["box"]  # a classifier's tag has no box
    assert validate_payload(payload) == []


@pytest.mark.parametrize(
    ("probabilities", "verdict", "tags"),
    [
        ((("pass", 0.1), ("scratch", 0.85), ("hole", 0.05)), "defect", 1),  # one accepted tag
        ((("pass", 0.5), ("scratch", 0.3), ("hole", 0.2)), "uncertain", 1),  # scratch in the band
        ((("pass", 0.97), ("scratch", 0.02), ("hole", 0.01)), "pass", 0),
    ],
)
def test_classifier_events_validate_without_boxes(probabilities: tuple[tuple[str, float], ...], verdict: str,
                                                  tags: int) -> None:
    import datetime

    from agent.config.models import TriageConfig
    from agent.core.detections import PrefilterResult
    from agent.core.event import build_event
    from agent.triage.policy import decide

    result = PrefilterResult("conveyor-resnet-cls@0123456789ab", (), 3.2, task="classify",
                             probabilities=probabilities)
    event = build_event(device="dev1", camera="cam1", sequence=7,
                        captured_at=datetime.datetime.now(datetime.timezone.utc), frame_width=640, frame_height=480,
                        decision=decide(result, TriageConfig()), model_id=result.model_id,
                        prefilter_latency_ms=result.latency_ms)
    payload = json.loads(event.to_json())
    assert payload["verdict"] == verdict and len(payload["tags"]) == tags
    assert all("box" not in t and t["source"] == "prefilter" for t in payload["tags"])
    assert validate_payload(payload) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(payload: dict[str, Any]) -> None:
        node: Any = payload
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(payload: dict[str, Any]) -> None:
        node: Any = payload
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        del node[last]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_delete("event_id"), "$: 'event_id' is a required property"),  # missing field
        (
            _delete("escalation.model"),
            "$.escalation: 'model' is a required property",
        ),  # nullable, not optional
        (
            _set("colour", "red"),
            "$: Additional properties are not allowed ('colour' was unexpected)",
        ),  # extra
        (_set("tags.0.area", 12), "$.tags[0]: Additional properties are not allowed"),  # extra, nested
        (_set("frame.depth", 3), "$.frame: Additional properties are not allowed"),
        (_set("verdict", "broken"), "$.verdict: 'broken' is not one of"),  # bad enum
        (_set("decided_by", "human"), "$.decided_by: 'human' is not one of"),
        (_set("escalation.status", "lost"), "$.escalation.status: 'lost' is not one of"),
        (_set("tags.0.state", "rejected"), "$.tags[0].state: 'rejected' is not one of"),
        (_set("captured_at", "2026-11-22T03:04:05+00:00"), "$.captured_at: "),  # offset instead of Z
        (
            _set("created_at", "2026-13-40T03:04:05.000001Z"),
            "$.created_at: '2026-13-40T03:04:05.000001Z' is not a 'date-time'",
        ),  # month 13
        (_set("captured_at", "yesterday"), "$.captured_at: "),
        (_set("tags.0.confidence", 1.5), "$.tags[0].confidence: 1.5 is greater than the maximum of 1"),
        (_set("tags.0.box", [1, 2, 3]), "$.tags[0].box: [1, 2, 3] is too short"),  # 4 numbers
        (_set("sequence", 0), "$.sequence: 0 is less than the minimum of 1"),
        (_set("sequence", 1.5), "$.sequence: 1.5 is not of type 'integer'"),
        (_set("event_id", "not-a-uuid"), "$.event_id: "),
        (_set("schema", "edge-agent/tag-event/v2"), "$.schema: 'edge-agent/tag-event/v1' was expected"),
        (_set("device", "box/1"), "$.device: 'box/1' does not match"),  # a topic level
        (_set("escalation.latency_ms", "fast"), "$.escalation.latency_ms: 'fast' is not of type"),
    ],
)
def test_bad_payloads_are_rejected_with_a_path(
    event_factory: EventFactory, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    payload = copy.deepcopy(event_factory(verdict="defect").to_payload())
    mutate(payload)
    problems = validate_payload(payload)
    assert problems, "the mutated payload was accepted"
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported(event_factory: EventFactory) -> None:
    payload = event_factory().to_payload()
    payload["verdict"] = "broken"
    del payload["camera"]
    problems = validate_payload(payload)
    assert len(problems) == 2, problems
    assert problems[0].startswith("$: 'camera'")  # sorted by path


def test_non_objects_are_rejected() -> None:
    assert validate_payload([1, 2]) == ["$: [1, 2] is not of type 'object'"]
