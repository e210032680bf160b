"""The specification's rules for an edge node's stream of messages (Sparkplug B 3.0, chapter 4 and the TCK's
assertions; /work notes in docs/sparkplug.md), checked on what a subscriber to ``spBv1.0/#`` received, in order.
Written from the rules, not from edge-agent's code; messages are read with :mod:`tests.outputs.spb_wire`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tests.outputs.spb_wire import BOOLEAN, INT64, UINT64, Payload, decode


@dataclasses.dataclass
class Received:
    kind: str
    device: str | None
    payload: Payload
    qos: int
    retain: bool


@dataclasses.dataclass
class Session:
    """One NBIRTH .. NDEATH span of a connection (rebirths stay in the same session)."""

    bdseq: int
    births: int = 1
    death: str | None = None  # "NDEATH" once seen; "lost" when a new connection's NBIRTH came without it
    birth_ms: int = 0  # the first NBIRTH's timestamp
    ddata: list[Payload] = dataclasses.field(default_factory=list)


class EdgeNodeChecker:
    """Feed it every message of one edge node (``feed``); ``violations`` lists each broken rule."""

    def __init__(self, group: str, node: str) -> None:
        self.group, self.node = group, node
        self.violations: list[str] = []
        self.sessions: list[Session] = []
        self.messages: list[Received] = []
        self.wraps = 0
        self.repeated_deaths = 0
        self._seq: int | None = None  # the last seq of the live session; None: no live session
        self._devices: dict[str, dict[str, int]] = {}  # device -> metric name -> datatype (from its DBIRTH)

    def _bad(self, i: int, rule: str) -> None:
        self.violations.append(f"message {i} ({self.messages[i].kind}): {rule}")

    def feed(self, topic: str, data: bytes, qos: int, retain: bool) -> None:
        parts = topic.split("/")
        if parts[0] != "spBv1.0" or parts[1] == "STATE":
            return
        if len(parts) not in (4, 5) or parts[1] != self.group or parts[3] != self.node:
            self.violations.append(f"topic {topic!r} is not spBv1.0/{self.group}/<type>/{self.node}[/<device>]")
            return
        kind, device = parts[2], parts[4] if len(parts) == 5 else None
        if kind in ("NCMD", "DCMD"):
            return  # the host's commands (and the node's own barrier subscriptions) are not the node's messages
        try:
            payload = decode(data)
        except ValueError as exc:
            self.violations.append(f"{topic}: not a protobuf payload ({exc})")
            return
        self.messages.append(Received(kind, device, payload, qos, retain))
        i = len(self.messages) - 1
        handler = {"NBIRTH": self._nbirth, "NDEATH": self._ndeath, "DBIRTH": self._dbirth, "DDATA": self._ddata,
                   "NDATA": self._ndata, "DDEATH": self._ddeath}.get(kind)
        if handler is None:
            self._bad(i, f"unknown message type {kind}")
            return
        if kind != "NDEATH" and (qos != 0 or retain):
            self._bad(i, f"must be QoS 0 and not retained (got QoS {qos}, retain {retain})")
        handler(i, payload)

    def _bdseq(self, i: int, p: Payload) -> int | None:
        found = [m for m in p.metrics if m.name == "bdSeq"]
        if len(found) != 1:
            self._bad(i, "must carry exactly one bdSeq metric")
            return None
        m = found[0]
        if m.datatype not in (INT64, UINT64) or m.value_field != 11 or not 0 <= m.value <= 255:
            self._bad(i, f"bdSeq must be an Int64 long_value 0..255 (datatype {m.datatype}, value {m.value})")
            return None
        return int(m.value)

    def _nbirth(self, i: int, p: Payload) -> None:
        if p.seq != 0:
            self._bad(i, f"NBIRTH seq must be 0, got {p.seq}")
        if p.timestamp is None:
            self._bad(i, "NBIRTH must carry a timestamp")
        rebirth = [m for m in p.metrics if m.name == "Node Control/Rebirth"]
        if len(rebirth) != 1 or rebirth[0].datatype != BOOLEAN or rebirth[0].value is not False:
            self._bad(i, "NBIRTH must carry Node Control/Rebirth = false (Boolean)")
        self._typed(i, p)
        bdseq = self._bdseq(i, p)
        live = self.sessions[-1] if self.sessions and self.sessions[-1].death is None else None
        if live is not None and bdseq == live.bdseq:  # a rebirth: same connection, same bdSeq
            live.births += 1
        elif live is not None and bdseq is not None and bdseq == (live.bdseq + 1) % 256:
            live.death = "lost"  # a new connection whose predecessor's NDEATH never came (the broker went down)
            self.sessions.append(Session(bdseq, birth_ms=p.timestamp or 0))
        elif live is not None:
            self._bad(i, f"an NBIRTH must keep the session's bdSeq {live.bdseq} (rebirth) or take the next one "
                      f"(new connection), got {bdseq}")
        else:
            if self.sessions and bdseq is not None and bdseq != (self.sessions[-1].bdseq + 1) % 256:
                self._bad(i, f"a new connection's bdSeq must follow {self.sessions[-1].bdseq}, got {bdseq}")
            self.sessions.append(Session(bdseq if bdseq is not None else -1, birth_ms=p.timestamp or 0))
        self._seq = 0
        self._devices = {}

    def _ndeath(self, i: int, p: Payload) -> None:
        if p.seq is not None:
            self._bad(i, "NDEATH must not carry a seq")
        bdseq = self._bdseq(i, p)
        live = self.sessions[-1] if self.sessions and self.sessions[-1].death is None else None
        if live is None:
            if self.sessions and bdseq == self.sessions[-1].bdseq:
                self.repeated_deaths += 1  # the will again (QoS 1 is at least once): the host ignores it
            else:
                self._bad(i, "NDEATH without a live session (no NBIRTH since the last NDEATH)")
            return
        if bdseq != live.bdseq:
            self._bad(i, f"NDEATH bdSeq {bdseq} must equal the session's NBIRTH bdSeq {live.bdseq}")
        live.death = "NDEATH"
        self._seq = None

    def _next_seq(self, i: int, p: Payload) -> bool:
        if self._seq is None:
            self._bad(i, "sent while the node is not born (no NBIRTH since the last NDEATH)")
            return False
        want = (self._seq + 1) % 256
        if p.seq != want:
            self._bad(i, f"seq must be {want} (after {self._seq}), got {p.seq}")
        if p.seq == 0:
            self.wraps += 1
        self._seq = p.seq if p.seq is not None else want
        if p.timestamp is None:
            self._bad(i, "must carry a timestamp")
        return True

    def _typed(self, i: int, p: Payload) -> None:
        for m in p.metrics:
            if m.name is None or m.datatype is None:
                self._bad(i, f"every metric needs a name and a datatype in a birth ({m})")
            elif not m.is_null and m.value_field is None:
                self._bad(i, f"metric {m.name!r} has no value and is not null")

    def _dbirth(self, i: int, p: Payload) -> None:
        if not self._next_seq(i, p):
            return
        self._typed(i, p)
        device = self.messages[i].device or ""
        self._devices[device] = {m.name or "": m.datatype or 0 for m in p.metrics}

    def _ddata(self, i: int, p: Payload) -> None:
        if not self._next_seq(i, p):
            return
        device = self.messages[i].device or ""
        born = self._devices.get(device)
        if born is None:
            self._bad(i, f"DDATA for device {device!r} before its DBIRTH in this birth")
            return
        for m in p.metrics:
            if m.name not in born:
                self._bad(i, f"metric {m.name!r} was not in the device's DBIRTH")
            elif m.datatype is not None and m.datatype != born[m.name]:
                self._bad(i, f"metric {m.name!r} has datatype {m.datatype}, its DBIRTH said {born[m.name]}")
            if m.timestamp is None:
                self._bad(i, f"metric {m.name!r} has no timestamp")
        self.sessions[-1].ddata.append(p)

    def _ddeath(self, i: int, p: Payload) -> None:
        if not self._next_seq(i, p):
            return
        device = self.messages[i].device or ""
        if self._devices.pop(device, None) is None:
            self._bad(i, f"DDEATH for device {device!r}, which is not born")

    def _ndata(self, i: int, p: Payload) -> None:
        self._next_seq(i, p)

    def ddata(self) -> list[Payload]:
        return [p for s in self.sessions for p in s.ddata]

    def summary(self) -> dict[str, Any]:
        return {"sessions": [(s.bdseq, s.births, s.death, len(s.ddata)) for s in self.sessions], "wraps": self.wraps,
                "messages": len(self.messages), "violations": self.violations[:5]}
