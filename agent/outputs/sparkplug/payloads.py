"""The Sparkplug B messages edge-agent sends and reads, built with the protobuf module generated from
``proto/sparkplug_b/sparkplug_b.proto`` (``agent.wire.sparkplug_b_pb2``). Pure: bytes in, bytes out.

Every metric is sent by name (no aliases: Ignition's handling of NBIRTH aliases is a known interop trap), with
its data type in every message. A value that is not known yet (a device's metrics in its DBIRTH before its
first event since the start) is sent with ``is_null``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from google.protobuf.message import DecodeError

from agent.outputs.sparkplug.metrics import DEVICE_TYPES, NODE_TYPES, DeviceRecord, MetricValue
from agent.wire import sparkplug_b_pb2 as pb

__all__ = ["HostState", "device_birth", "device_data", "device_death", "node_birth", "node_data", "node_death",
           "parse_state", "rebirth_requested"]

_INT32 = {1, 2, 3, 5, 6, 7}  # Int8..Int32, UInt8..UInt32: int_value
_INT64 = {4, 8, 13}  # Int64, UInt64, DateTime (ms): long_value
_TEXT = {12, 14, 15}  # String, Text, UUID: string_value
_BOOLEAN = 11


def _add(payload: pb.Payload, name: str, datatype: int, value: MetricValue, *, timestamp: int | None = None,
         historical: bool = False) -> None:
    metric = payload.metrics.add()
    metric.name = name
    metric.datatype = datatype
    if timestamp is not None:
        metric.timestamp = timestamp
    if historical:
        metric.is_historical = True
    if value is None:
        metric.is_null = True
    elif datatype == _BOOLEAN:
        metric.boolean_value = bool(value)
    elif datatype in _TEXT:
        metric.string_value = str(value)
    elif datatype in _INT64:
        metric.long_value = int(value) & 0xFFFF_FFFF_FFFF_FFFF  # two's complement for a negative Int64
    elif datatype in _INT32:
        metric.int_value = int(value) & 0xFFFF_FFFF
    else:
        raise ValueError(f"metric {name!r}: data type {datatype} is not one edge-agent sends")


def node_birth(bdseq: int, now_ms: int, node_values: Mapping[str, MetricValue]) -> bytes:
    """NBIRTH: seq 0, the bdSeq of this connection's will, ``Node Control/Rebirth`` false, every node metric."""
    payload = pb.Payload(timestamp=now_ms, seq=0)
    values: dict[str, MetricValue] = {**node_values, "bdSeq": bdseq, "Node Control/Rebirth": False}
    for name, datatype in NODE_TYPES.items():
        _add(payload, name, datatype, values.get(name), timestamp=now_ms)
    return bytes(payload.SerializeToString())


def node_data(seq: int, now_ms: int, values: Mapping[str, MetricValue]) -> bytes:
    """NDATA: node metrics that changed."""
    payload = pb.Payload(timestamp=now_ms, seq=seq)
    for name, value in values.items():
        _add(payload, name, NODE_TYPES[name], value, timestamp=now_ms)
    return bytes(payload.SerializeToString())


def node_death(bdseq: int, now_ms: int) -> bytes:
    """NDEATH (the will, and the message of a clean shutdown): the bdSeq only, no seq."""
    payload = pb.Payload(timestamp=now_ms)
    _add(payload, "bdSeq", NODE_TYPES["bdSeq"], bdseq)
    return bytes(payload.SerializeToString())


def device_birth(seq: int, now_ms: int, metrics: Iterable[str], last: DeviceRecord | None) -> bytes:
    """DBIRTH: every chosen device metric, with the camera's latest values (null before its first event)."""
    payload = pb.Payload(timestamp=now_ms, seq=seq)
    for name in metrics:
        value = last.values.get(name) if last is not None else None
        _add(payload, name, DEVICE_TYPES[name], value,  # type: ignore[index]
             timestamp=last.captured_ms if last is not None else now_ms)
    return bytes(payload.SerializeToString())


def device_data(seq: int, now_ms: int, record: DeviceRecord, *, historical: bool) -> bytes:
    """DDATA of one event: its metrics stamped with the capture time; ``historical`` for store-and-forward
    (sent after the session it belongs to ended, or committed while no session was born)."""
    payload = pb.Payload(timestamp=now_ms, seq=seq)
    for name, value in record.values.items():
        datatype = DEVICE_TYPES.get(name)  # type: ignore[call-overload]
        if datatype is not None:  # a metric an older version stored and this one no longer knows: skipped
            _add(payload, name, datatype, value, timestamp=record.captured_ms, historical=historical)
    return bytes(payload.SerializeToString())


def device_death(seq: int, now_ms: int) -> bytes:
    """DDEATH: a device gone (a camera a reload removed); seq, no metrics."""
    return bytes(pb.Payload(timestamp=now_ms, seq=seq).SerializeToString())


def rebirth_requested(data: bytes) -> bool:
    """Whether an NCMD asks for a rebirth (metric ``Node Control/Rebirth`` = true). ValueError when ``data`` is
    not a Sparkplug B payload."""
    try:
        payload = pb.Payload.FromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a Sparkplug B payload ({exc})") from exc
    return any(m.name == "Node Control/Rebirth" and m.WhichOneof("value") == "boolean_value" and m.boolean_value
               for m in payload.metrics)


class HostState:
    """A primary host's STATE message (Sparkplug 3.0: ``{"online": bool, "timestamp": ms}``)."""

    def __init__(self, online: bool, timestamp: int) -> None:
        self.online = online
        self.timestamp = timestamp

    def __repr__(self) -> str:
        return f"HostState(online={self.online}, timestamp={self.timestamp})"


def parse_state(data: bytes) -> HostState:
    """The STATE payload; ValueError saying what is wrong when it is not the 3.0 JSON document."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"STATE payload is not JSON ({exc}); expected {{\"online\": bool, \"timestamp\": ms}}") \
            from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("online"), bool) \
            or not isinstance(doc.get("timestamp"), int) or isinstance(doc.get("timestamp"), bool):
        raise ValueError(f"STATE payload {str(doc)[:80]!r} is not {{\"online\": bool, \"timestamp\": ms}} "
                         "(a Sparkplug 3.0 host; 2.2 hosts publish ONLINE/OFFLINE text on STATE/<host id>)")
    return HostState(doc["online"], doc["timestamp"])
