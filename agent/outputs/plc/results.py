"""A tag event as the values a PLC is given (pure logic), and those values as Modbus registers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from agent.core.event import TagEvent
from agent.outputs.plc.regmap import SIGNALS, Address

__all__ = ["VERDICT_CODES", "PlcResult", "encode", "result_of"]

VERDICT_CODES = {"pass": 1, "defect": 2, "uncertain": 3}

Value = bool | int | str


@dataclasses.dataclass(frozen=True)
class PlcResult:
    """One frame's final result, as written to the PLC."""

    camera: str
    frame_sequence: int
    event_id: str
    verdict: str
    ok: bool
    ng: bool
    defect_code: int


def result_of(event: TagEvent, *, uncertain_is_ng: bool, codes: Mapping[str, int], unknown_code: int) -> PlcResult:
    """The result of ``event``: ok/ng from the verdict (uncertain counts as ng when ``uncertain_is_ng``), the
    first defect's code: its canonical label's or raw label's entry in ``codes``, else ``unknown_code``."""
    verdict = event.verdict
    ng = verdict == "defect" or (verdict == "uncertain" and uncertain_is_ng)
    code = 0
    if verdict == "defect":
        code = unknown_code
        for label in _defect_labels(event):
            mapped = event.taxonomy.map(label) if event.taxonomy is not None else None
            found = codes.get(mapped.canonical) if mapped is not None else None
            found = found if found is not None else codes.get(label)
            if found is not None:
                code = found
                break
    return PlcResult(event.camera, event.sequence, event.event_id, verdict, verdict == "pass", ng, code)


def _defect_labels(event: TagEvent) -> list[str]:
    """The defect labels, the deciding stage's first: the VLM's defect types, then the prefilter's tags."""
    vlm = [d.type for d in event.vlm_defects]
    prefilter = [t.detection.label for t in event.decision.tags]
    return vlm + prefilter if event.decided_by == "vlm" else prefilter + vlm


def values_of(result: PlcResult, sequence: int, passed: int, rejected: int) -> dict[str, Value]:
    """Every result signal's value (the error signals cleared: a result written means no error now)."""
    return {
        "result_ok": result.ok, "result_ng": result.ng, "verdict": VERDICT_CODES[result.verdict],
        "defect_code": result.defect_code, "pass_count": passed & 0xFFFFFFFF, "ng_count": rejected & 0xFFFFFFFF,
        "event_id": result.event_id, "error": False, "error_code": 0, "sequence": sequence & 0xFFFFFFFF,
    }


def encode(signal: str, address: Address, value: Value) -> list[int] | bool:
    """``value`` as what the Modbus table at ``address`` holds: a coil's bit, or registers (a u32 high word
    first; a string two ASCII characters a register, NUL-padded to the address's width)."""
    kind = SIGNALS[signal].kind
    if address.table == "coil":
        return bool(value)
    if kind == "bool":
        return [1 if value else 0]
    if kind == "u16":
        return [int(value) & 0xFFFF]
    if kind == "u32":
        number = int(value) & 0xFFFFFFFF
        return [number >> 16, number & 0xFFFF]
    raw = str(value).encode("ascii", "replace")[: address.width * 2].ljust(address.width * 2, b"\0")
    return [(raw[i] << 8) | raw[i + 1] for i in range(0, len(raw), 2)]


def decode_string(registers: Sequence[int]) -> str:
    """The inverse of :func:`encode` for a string (the PLC side's view; tests and the bench)."""
    raw = b"".join(bytes([(r >> 8) & 0xFF, r & 0xFF]) for r in registers)
    return raw.rstrip(b"\0").decode("ascii", "replace")
