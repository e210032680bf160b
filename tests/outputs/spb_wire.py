"""An independent reader of Sparkplug B messages, for the tests: a protobuf wire-format decoder written here from
the specification's field numbers (Payload: timestamp 1, metrics 2, seq 3, uuid 4, body 5; Metric: name 1, alias 2,
timestamp 3, datatype 4, is_historical 5, is_transient 6, is_null 7, metadata 8, properties 9, values 10-19; the
data type codes of spec 6.4.16), sharing nothing with ``proto/sparkplug_b/`` or the generated module, and a
checker of the specification's rules for an edge node's message stream (chapter 4; docs/sparkplug.md).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

# value field of a metric by data type code (spec 6.4.16): Int8-UInt32 -> int_value (10), Int64/UInt64/DateTime
# -> long_value (11), Float 12, Double 13, Boolean 14, String/Text/UUID -> string_value (15), Bytes/File 16
_VALUE_FIELD = {1: 10, 2: 10, 3: 10, 5: 10, 6: 10, 7: 10, 4: 11, 8: 11, 13: 11, 9: 12, 10: 13, 11: 14,
                12: 15, 14: 15, 15: 15, 17: 16, 18: 16}
INT64, UINT64, BOOLEAN, STRING, DATETIME = 4, 8, 11, 12, 13


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value): an int for varint/fixed fields, bytes for length-delimited ones."""
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire} of field {number} is not valid here")
        if i > len(buf):
            raise ValueError(f"field {number} runs past the end of the message")
        out.append((number, wire, value))
    return out


@dataclasses.dataclass
class Metric:
    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: int | None = None
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    value: Any = None
    value_field: int | None = None


@dataclasses.dataclass
class Payload:
    timestamp: int | None = None
    seq: int | None = None
    uuid: str | None = None
    metrics: list[Metric] = dataclasses.field(default_factory=list)

    def metric(self, name: str) -> Metric:
        found = [m for m in self.metrics if m.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} metrics named {name!r}")
        return found[0]

    def values(self) -> dict[str, Any]:
        return {m.name: m.value for m in self.metrics if m.name is not None}


def _metric(buf: bytes) -> Metric:
    m = Metric()
    for number, _wire, value in fields(buf):
        if number == 1:
            m.name = value.decode("utf-8")
        elif number in (2, 3, 4):
            setattr(m, {2: "alias", 3: "timestamp", 4: "datatype"}[number], value)
        elif number in (5, 6, 7):
            setattr(m, {5: "is_historical", 6: "is_transient", 7: "is_null"}[number], bool(value))
        elif 10 <= number <= 19:
            m.value_field = number
            m.value = _value(number, value)
    return m


def _value(number: int, raw: Any) -> Any:
    if number in (10, 11):
        return raw
    if number == 12:
        return struct.unpack("<f", raw)[0]
    if number == 13:
        return struct.unpack("<d", raw)[0]
    if number == 14:
        return bool(raw)
    if number == 15:
        return raw.decode("utf-8")
    return bytes(raw)


def decode(buf: bytes) -> Payload:
    """A Sparkplug B payload from its bytes (ValueError for bytes that are not a protobuf message)."""
    p = Payload()
    for number, _wire, value in fields(buf):
        if number == 1:
            p.timestamp = value
        elif number == 2:
            p.metrics.append(_metric(value))
        elif number == 3:
            p.seq = value
        elif number == 4:
            p.uuid = value.decode("utf-8")
    return p


def _key(number: int, wire: int) -> bytes:
    return _enc_varint(number << 3 | wire)


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def rebirth_command(timestamp_ms: int) -> bytes:
    """An NCMD payload asking for a rebirth (metric ``Node Control/Rebirth``, Boolean, true), encoded by hand."""
    name = b"Node Control/Rebirth"
    metric = _key(1, 2) + _enc_varint(len(name)) + name + _key(4, 0) + _enc_varint(BOOLEAN) + _key(14, 0) + b"\x01"
    return _key(1, 0) + _enc_varint(timestamp_ms) + _key(2, 2) + _enc_varint(len(metric)) + metric
