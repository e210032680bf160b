"""Question templates and the answer schema: pure, no server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from agent.errors import RequestRejected
from agent.gateway.templates import (
    GRAMMAR_KEYWORDS,
    Answer,
    AnswerDefect,
    AnswerTag,
    Hint,
    InvalidAnswer,
    answer_schema,
    get_template,
    parse_answer,
    template_ids,
    validation_schema,
)

TYPES = ("scratch", "hole", "stain", "missing", "other")


def _keywords(schema: Any) -> set[str]:
    """Every keyword used in a schema (property names under "properties" are not keywords)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            if key == "properties":
                for sub in value.values():
                    found |= _keywords(sub)
            elif isinstance(value, dict):
                found |= _keywords(value)
    return found


def test_the_schema_sent_to_ollama_uses_only_keywords_its_grammar_enforces() -> None:
    schema = answer_schema(TYPES)
    assert _keywords(schema) <= GRAMMAR_KEYWORDS
    Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["verdict", "tags", "defects", "description"]


def test_the_validation_schema_adds_value_constraints() -> None:
    schema = validation_schema(TYPES)
    Draft202012Validator.check_schema(schema)
    assert {"minimum", "maximum"} <= _keywords(schema)  # number bounds: skipped by llama-server's grammar
    assert not {"minimum", "maximum"} & _keywords(answer_schema(TYPES))
    # and it is the grammar schema plus constraints: same properties, same enums
    assert schema["properties"]["verdict"] == answer_schema(TYPES)["properties"]["verdict"]


ANSWERS = [
    # (id, content, the problem named)
    ("not JSON", "The part is fine.", "not JSON"),
    ("empty", "", "not JSON"),
    ("a list", "[]", "is not of type 'object'"),
    ("verdict outside the enum", {"verdict": "ok"}, "$.verdict: 'ok' is not one of"),
    ("missing field", {"description": None}, "$.description: None is not of type 'string'"),
    ("confidence above 1", {"tags": [{"label": "x", "confidence": 1.2}]}, "$.tags[0].confidence: 1.2 is greater"),
    ("unknown defect type", {"defects": [{"type": "dent", "location": "x", "severity": "low"}]},
     "$.defects[0].type: 'dent' is not one of"),
    ("unknown severity", {"defects": [{"type": "hole", "location": "x", "severity": "fatal"}]},
     "$.defects[0].severity"),
    ("extra field", {"score": 3}, "Additional properties are not allowed ('score'"),
]
GOOD: dict[str, Any] = {"verdict": "defect", "tags": [{"label": "hole", "confidence": 0.9}],
                        "defects": [{"type": "hole", "location": "centre", "severity": "high"}],
                        "description": " A hole in the middle. "}


@pytest.mark.parametrize(("content", "problem"), [r[1:] for r in ANSWERS], ids=[r[0] for r in ANSWERS])
def test_invalid_answers_name_their_problem(content: str | dict[str, Any], problem: str) -> None:
    text = content if isinstance(content, str) else json.dumps({**GOOD, **content})
    with pytest.raises(InvalidAnswer) as info:
        parse_answer(text, TYPES)
    assert problem in str(info.value)


def test_a_good_answer_parses() -> None:
    assert parse_answer(json.dumps(GOOD), TYPES) == Answer(
        verdict="defect", tags=(AnswerTag("hole", 0.9),), defects=(AnswerDefect("hole", "centre", "high"),),
        description="A hole in the middle.")


def test_templates_by_id() -> None:
    assert template_ids() == ["inspect-v1"]
    assert get_template("").id == "inspect-v1"  # empty: the default
    with pytest.raises(RequestRejected, match="template_id 'ask-v2' is unknown; this gateway knows: inspect-v1"):
        get_template("ask-v2")


def test_inspect_v1_names_the_classes_and_gives_the_detections_as_hints() -> None:
    prompt = get_template("inspect-v1").build(
        image=b"frame", crops=[(b"crop", Hint("hole", 0.31, (10.0, 20.0, 30.4, 40.6)))],
        detections=[Hint("scratch", 0.45, (1.0, 2.0, 3.0, 4.0)), Hint("", 0.3, None)],
        source_size=(1920, 1080), defect_classes=["scratch", "hole", "stain", "missing"])
    assert prompt.images == (b"frame", b"crop")
    assert "defect types: scratch, hole, stain, missing" in prompt.user
    assert "- scratch (confidence 0.45) at 1,2,3,4" in prompt.user
    assert "- unlabelled (confidence 0.30)" in prompt.user
    assert "of the 1920x1080 frame" in prompt.user
    assert "close-up 1: hole (confidence 0.31) at 10,20,30,41" in prompt.user
    assert json.dumps(prompt.schema, separators=(",", ":")) in prompt.user  # the schema in the prompt too
    assert prompt.defect_types == TYPES
    assert "only with one JSON object" in prompt.system


def test_inspect_v1_without_detections() -> None:
    prompt = get_template("inspect-v1").build(image=b"f", crops=[], detections=[], source_size=None,
                                              defect_classes=["dent", "other"])
    assert "marked no region" in prompt.user and "close-up" not in prompt.user
    assert prompt.defect_types == ("dent", "other")  # "other" is not added twice
