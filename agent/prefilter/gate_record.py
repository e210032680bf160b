"""The INT8 gate record next to a quantized model, and what it says about that model.

``edge-agent models quantize`` writes ``<model>.gate.json`` beside every INT8
model it lets through. The record names the model's SHA-256, so a file that was
swapped or re-quantized without a new gate is seen as *stale*. The agent checks
this at start-up (``check_gate``) and says so when an INT8 model has no passing
record; ``model.require_gate`` makes that a refusal to start.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Literal

GATE_SCHEMA = "edge-agent/int8-gate/v1"
"""The ``schema`` of a gate record (written by the gate of :mod:`agent.tooling.evaluation.gate`)."""

GateState = Literal["passed", "failed", "missing", "stale", "unreadable", "not_int8"]

_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}


def gate_record_path(model: pathlib.Path) -> pathlib.Path:
    """``models/x.int8.onnx`` -> ``models/x.int8.gate.json``."""
    return model.with_suffix(".gate.json")


def graph_precision(model: Any) -> str:
    """fp32 | fp16 | int8 of a loaded ``onnx.ModelProto``, from its operators and weights."""
    import onnx

    ops = {n.op_type for n in model.graph.node}
    if ops & _INT8_OPS or any(op.startswith("QLinear") for op in ops):
        return "int8"
    half = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    if any(t.data_type in half for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def file_precision(path: pathlib.Path) -> str:
    import onnx

    return graph_precision(onnx.load(str(path), load_external_data=False))


@dataclasses.dataclass(frozen=True)
class GateStatus:
    state: GateState
    detail: str
    record: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.state in ("passed", "not_int8")


def read_gate_record(model: pathlib.Path) -> tuple[dict[str, Any] | None, str | None]:
    """(content, None), (None, why it is unreadable), or (None, None) when there is no record."""
    path = gate_record_path(model)
    if not path.exists():
        return None, None
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"unreadable: {exc}"
    if not isinstance(raw, dict):
        return None, "not a JSON object"
    return raw, None


def check_gate(model: pathlib.Path, sha256: str, precision: str) -> GateStatus:
    """What the gate record says about ``model`` (whose content hash is ``sha256``)."""
    record_path = gate_record_path(model)
    if precision != "int8":
        return GateStatus("not_int8", f"{precision} model: no INT8 gate needed")
    record, error = read_gate_record(model)
    if error is not None:
        return GateStatus("unreadable", f"gate record {record_path} is {error}; re-run `edge-agent models quantize`")
    if record is None:
        return GateStatus("missing", f"INT8 model {model} has no accuracy gate record ({record_path.name}); its "
                          "accuracy against the FP32 model is unknown. Make it with `edge-agent models quantize`")
    if record.get("schema") != GATE_SCHEMA:
        return GateStatus("unreadable", f"gate record {record_path} is not an {GATE_SCHEMA} record", record)
    recorded = (record.get("model") or {}).get("sha256") if isinstance(record.get("model"), dict) else None
    if recorded != sha256:
        return GateStatus("stale", f"gate record {record_path} is for another file (sha256 {str(recorded)[:12]}, "
                          f"this model is {sha256[:12]}); the model changed after the gate ran", record)
    gate = record.get("gate") if isinstance(record.get("gate"), dict) else {}
    assert isinstance(gate, dict)
    if not gate.get("passed"):
        reasons = "; ".join(str(r) for r in gate.get("reasons", [])) or "no reason recorded"
        return GateStatus("failed", f"INT8 model {model} failed its accuracy gate: {reasons}", record)
    return GateStatus("passed", f"INT8 gate passed: {gate.get('metric')} {gate.get('int8')} vs FP32 "
                      f"{gate.get('fp32')}, verdicts changed {gate.get('verdicts', {}).get('changed_pct')} %", record)
