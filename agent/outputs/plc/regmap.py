"""The signals the agent exchanges with a PLC and where each one lives: pure logic, no I/O.

A signal's address is text in the config. Modbus TCP: ``coil:N`` (one coil, for a bool), ``hr:N`` (holding
register N; a bool is 0/1, a 16-bit number takes one register, a 32-bit one two, high word first) or ``hr:N/R``
(a string in R registers, two ASCII characters each, the first in the high byte, padded with NUL). OPC UA: a
node id (``ns=2;s=Line1.Cam1.Verdict``, ``ns=3;i=1042``); the agent writes with the node's own data type.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Literal

__all__ = [
    "MODBUS_SPACE", "SIGNALS", "Address", "Signal", "find_overlaps", "parse_address", "required_signals",
]

Kind = Literal["bool", "u16", "u32", "string"]
Direction = Literal["plc", "agent"]  # who writes it
Protocol = Literal["modbus", "opcua"]

MODBUS_SPACE = 65536  # addresses 0..65535 in each Modbus table


@dataclasses.dataclass(frozen=True)
class Signal:
    kind: Kind
    writer: Direction
    handshake_only: bool
    doc: str
    min_chars: int = 0  # a string signal: the characters it must hold


SIGNALS: dict[str, Signal] = {
    "trigger": Signal("bool", "plc", True, "the PLC raises it to ask for an inspection; the agent clears it "
                      "when it takes the trigger"),
    "trigger_ready": Signal("bool", "agent", True, "1 while the agent can take a trigger"),
    "result_ready": Signal("bool", "agent", True, "raised once the result of the triggered part is written"),
    "result_ack": Signal("bool", "plc", True, "the PLC raises it once it read the result; the agent clears it "
                         "and result_ready"),
    "result_ok": Signal("bool", "agent", False, "1: the part passed"),
    "result_ng": Signal("bool", "agent", False, "1: the part is to be rejected"),
    "verdict": Signal("u16", "agent", False, "1 pass, 2 defect, 3 uncertain"),
    "defect_code": Signal("u16", "agent", False, "the first defect's code (defect_codes), 0 for a pass"),
    "sequence": Signal("u32", "agent", False, "the result's number (handshake: the trigger's number), "
                       "written last"),
    "pass_count": Signal("u32", "agent", False, "parts passed since the agent started"),
    "ng_count": Signal("u32", "agent", False, "parts rejected since the agent started"),
    "error": Signal("bool", "agent", False, "1 while error_code holds an error"),
    "error_code": Signal("u16", "agent", False, "0 none, else the error (docs/plc.md)"),
    "event_id": Signal("string", "agent", False, "the tag event's id (36 characters), to find it on MQTT",
                       min_chars=36),
}


def required_signals(mode: str) -> tuple[str, ...]:
    """The signals a camera's map must have in ``mode``."""
    return ("trigger", "trigger_ready", "result_ready", "result_ack") if mode == "handshake" else ()


@dataclasses.dataclass(frozen=True)
class Address:
    """Where one signal lives: a Modbus table (``coil``/``hr``) and a range, or an OPC UA node id."""

    table: Literal["coil", "hr", "node"]
    start: int = 0
    width: int = 1  # coils or registers
    node: str = ""

    def __str__(self) -> str:
        if self.table == "node":
            return self.node
        end = f"..{self.start + self.width - 1}" if self.width > 1 else ""
        return f"{self.table}:{self.start}{end}"


_MODBUS = re.compile(r"^(coil|hr):(\d{1,5})(?:/(\d{1,5}))?$")
_NODE = re.compile(r"^(ns=\d{1,5};)?(i=\d+|s=.+|b=[A-Za-z0-9+/=]+|"
                   r"g=[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})$")


def parse_address(protocol: Protocol, signal: str, text: str) -> Address:
    """``text`` as the address of ``signal``; ValueError saying what is wrong and what is expected."""
    spec = SIGNALS.get(signal)
    if spec is None:
        raise ValueError(f"unknown signal {signal!r}; expected one of {', '.join(SIGNALS)}")
    text = text.strip()
    if protocol == "opcua":
        if not _NODE.match(text):
            raise ValueError(f"{text!r} is not an OPC UA node id; expected e.g. 'ns=2;s=Line1.Cam1.Verdict' "
                             "or 'ns=3;i=1042'")
        return Address("node", node=text)
    match = _MODBUS.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Modbus address; expected 'coil:N', 'hr:N' or 'hr:N/R' "
                         "(a string in R registers), N in 0..65535 (Modicon numbering: holding register 40001 is hr:0, "
                         "coil 00001 is coil:0)")
    table, start, count = match.group(1), int(match.group(2)), match.group(3)
    width = _width(spec, table, count, text)
    if start + width > MODBUS_SPACE:
        raise ValueError(f"{text!r} runs past the end of the table ({start} + {width} > {MODBUS_SPACE})")
    return Address("coil" if table == "coil" else "hr", start, width)


def _width(spec: Signal, table: str, count: str | None, text: str) -> int:
    if table == "coil":
        if spec.kind != "bool" or count is not None:
            raise ValueError(f"{text!r}: a coil holds one bit, and this signal is a {_describe(spec)}; "
                             "put it in a holding register ('hr:N')")
        return 1
    if spec.kind == "string":
        need = (spec.min_chars + 1) // 2
        if count is None or int(count) < need:
            raise ValueError(f"{text!r}: this string needs {spec.min_chars} characters, so at least {need} "
                             f"registers ('hr:N/{need}')")
        return int(count)
    if count is not None:
        raise ValueError(f"{text!r}: '/R' is for strings; this signal is a {_describe(spec)} "
                         f"({2 if spec.kind == 'u32' else 1} register(s))")
    return 2 if spec.kind == "u32" else 1


def _describe(spec: Signal) -> str:
    return {"bool": "bool", "u16": "16-bit number", "u32": "32-bit number", "string": "string"}[spec.kind]


def find_overlaps(entries: Iterable[tuple[str, Address]]) -> list[str]:
    """Every pair of ``(owner, address)`` entries that share a coil, a register or a node, as messages."""
    seen: dict[tuple[str, int | str], str] = {}
    problems: list[str] = []
    for owner, address in entries:
        cells: list[int | str] = ([address.node] if address.table == "node"
                                  else list(range(address.start, address.start + address.width)))
        clash = next((seen[(address.table, c)] for c in cells if (address.table, c) in seen), None)
        if clash is not None:
            problems.append(f"{owner} ({address}) overlaps {clash}")
            continue
        for cell in cells:
            seen[(address.table, cell)] = f"{owner} ({address})"
    return problems


def parse_map(protocol: Protocol, mapping: Mapping[str, str]) -> dict[str, Address]:
    """Every signal's address (ValueError naming the first bad one)."""
    out: dict[str, Address] = {}
    for signal, text in mapping.items():
        try:
            out[signal] = parse_address(protocol, signal, text)
        except ValueError as exc:
            raise ValueError(f"{signal}: {exc}") from exc
    return out
