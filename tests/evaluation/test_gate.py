"""The INT8 accuracy gate's decision, and the gate record the agent checks at start-up."""

from __future__ import annotations

import json
import logging
import pathlib
import shutil

import pytest

from agent.config.models import DEFAULT_MODEL
from agent.errors import ModelError
from agent.prefilter.gate_record import check_gate, gate_record_path
from agent.prefilter.model_info import file_digest
from agent.runtime.building import check_model_gate
from agent.tooling.evaluation.gate import GATE_SCHEMA, GateLimits, judge


def test_within_limits_passes() -> None:
    r = judge("mAP50", 0.90, 0.895, ["pass"] * 100, ["pass"] * 99 + ["defect"], GateLimits())
    assert r.passed and r.reasons == () and abs(r.drop_points - 0.5) < 1e-9 and r.changed_pct == 1.0
    assert "mAP50 FP32 0.900 -> INT8 0.895 (-0.50 points, limit -1.00)" in r.summary()
    assert r.as_json()["verdicts"] == {"changed": 1, "images": 100, "changed_pct": 1.0}


def test_a_metric_drop_over_the_margin_is_refused_with_the_numbers() -> None:
    r = judge("mAP50", 0.897, 0.012, ["pass"] * 10, ["pass"] * 10, GateLimits())
    assert not r.passed
    assert r.reasons == ("INT8 mAP50 0.012 is 88.50 points below FP32 0.897; at most 1.00 points are allowed",)


def test_too_many_changed_verdicts_are_refused_even_with_the_metric_intact() -> None:
    fp32 = ["pass", "defect", "uncertain", "pass"] * 25
    int8 = ["uncertain"] * 5 + fp32[5:]
    r = judge("accuracy", 0.95, 0.96, fp32, int8, GateLimits(max_verdict_change_pct=2.0))
    assert not r.passed and len(r.reasons) == 1
    assert "changes the frame verdict on 4 of 100 images (4.0 %); at most 2.0 % are allowed" in r.reasons[0]


def test_both_reasons_and_an_empty_set() -> None:
    r = judge("mAP50", 0.9, 0.5, ["pass"], ["defect"], GateLimits())
    assert len(r.reasons) == 2
    assert "has no images" in judge("mAP50", 0.0, 0.0, [], [], GateLimits()).reasons[0]
    with pytest.raises(ValueError, match="both models must see the same images"):
        judge("mAP50", 0.9, 0.9, ["pass"], [], GateLimits())


@pytest.mark.parametrize("kwargs", [{"max_drop_points": -1.0}, {"max_verdict_change_pct": 101.0}])
def test_limits_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="expected"):
        GateLimits(**kwargs)


def _record(model: pathlib.Path, passed: bool, sha: str | None = None) -> None:
    gate_record_path(model).write_text(json.dumps({
        "schema": GATE_SCHEMA, "model": {"sha256": sha or file_digest(model)},
        "gate": {"passed": passed, "metric": "mAP50", "fp32": 0.9, "int8": 0.2 if not passed else 0.899,
                 "verdicts": {"changed_pct": 0.5},
                 "reasons": [] if passed else ["INT8 mAP50 0.200 is 70 points below"]},
    }))


def test_check_gate_states(tmp_path: pathlib.Path) -> None:
    model = tmp_path / "m.int8.onnx"
    shutil.copyfile(DEFAULT_MODEL, model)  # an FP32 graph: the states below are read as if it were INT8
    sha = file_digest(model)
    assert check_gate(model, sha, "fp32").state == "not_int8"
    missing = check_gate(model, sha, "int8")
    assert missing.state == "missing" and "has no accuracy gate record (m.int8.gate.json)" in missing.detail
    gate_record_path(model).write_text("{not json")
    assert check_gate(model, sha, "int8").state == "unreadable"
    _record(model, True, sha="0" * 64)
    stale = check_gate(model, sha, "int8")
    assert stale.state == "stale" and "the model changed after the gate ran" in stale.detail
    _record(model, False)
    failed = check_gate(model, sha, "int8")
    assert failed.state == "failed" and "70 points below" in failed.detail and not failed.ok
    _record(model, True)
    assert check_gate(model, sha, "int8").state == "passed"


def test_the_agent_says_so_at_start_up_and_refuses_when_told(
        tmp_path: pathlib.Path, quantized_model: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tmp_path / quantized_model.name
    shutil.copyfile(quantized_model, model)
    with caplog.at_level(logging.WARNING, logger="agent.runtime.building"):
        assert check_model_gate(model, required=False).state == "missing"
    assert "has no accuracy gate record" in caplog.text and "starting anyway" in caplog.text
    with pytest.raises(ModelError, match="has no accuracy gate record.*model.require_gate is on"):
        check_model_gate(model, required=True)
    _record(model, True)
    assert check_model_gate(model, required=True).state == "passed"
    assert check_model_gate(DEFAULT_MODEL, required=True).state == "not_int8"
