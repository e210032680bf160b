"""The agent's OPC UA address space as data: which nodes there are, their NodeIds and types, and the values a
published tag event or an ops snapshot gives them. Pure logic, no asyncua and no I/O (the server,
:mod:`agent.outputs.opcua_server.server`, writes what this computes). The node map is docs/opcua.md's table.

Browse paths under ``Objects/EdgeAgent`` (every node in the namespace ``opcua_server.namespace_uri``):

* ``Device/<name>``: the agent (version, device id, model, uptime, outbox backlog, MQTT connection);
* ``Cameras/<camera id>/<name>``: the camera's last event, ``Counters/<name>`` and ``Health/<name>``.

A node's string NodeId is its browse path below ``EdgeAgent``: ``Cameras/belt/Counters/Defect``. Camera ids are
letters, digits, ``_``, ``.`` and ``-`` (the config checks it), so a NodeId never needs escaping.

Counters count first publications since the agent started (an event's revision 2, published when the VLM answered
after the deadline, updates the last-event nodes but is not counted again), so they equal the counts of distinct
``event_id`` values on MQTT; ``Escalated`` counts the events the escalation thread published (uncertain frames).
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from agent.core.event import TagEvent
from agent.core.ports import Published
from agent.ops.snapshot import AgentSnapshot

__all__ = [
    "CAMERA_NODES", "DEVICE_NODES", "NULL_TIME", "NodeSpec", "Tally", "camera_defaults", "camera_health",
    "camera_node_id", "changed", "device_node_id", "device_values", "event_values", "specs_by_path",
]

ValueType = Literal["String", "UInt64", "DateTime", "Boolean"]
NULL_TIME = datetime.datetime(1601, 1, 1, tzinfo=datetime.timezone.utc)
"""OPC UA's null DateTime: a camera's ``CapturedAt`` until its first event."""


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One variable: its browse path below its parent (``Counters/Pass``), OPC UA type and meaning."""

    path: str
    type: ValueType
    meaning: str

    @property
    def default(self) -> Any:
        return {"String": "", "UInt64": 0, "DateTime": NULL_TIME, "Boolean": False}[self.type]


CAMERA_NODES: tuple[NodeSpec, ...] = (
    NodeSpec("Verdict", "String", "last event's verdict: pass, defect or uncertain ('' before the first)"),
    NodeSpec("DefectLabels", "String", "last event's defect labels, comma-separated (prefilter tags, then the "
             "VLM's defect types); '' for a pass"),
    NodeSpec("DefectCodes", "String", "the taxonomy codes of those labels, comma-separated ('' without a "
             "taxonomy)"),
    NodeSpec("Sequence", "UInt64", "last event's frame sequence (from 1 per camera start)"),
    NodeSpec("CapturedAt", "DateTime", "last event's capture time, UTC (1601-01-01: none yet)"),
    NodeSpec("DecidedBy", "String", "who decided the last event: prefilter or vlm"),
    NodeSpec("EscalationStatus", "String", "last event's escalation status (not_needed, answered, ...)"),
    NodeSpec("EventId", "String", "last event's event_id (the MQTT tag event's)"),
    NodeSpec("Revision", "UInt64", "last event's revision (2: the VLM's late answer updated it)"),
    NodeSpec("ModelId", "String", "the prefilter model that inspected the last frame"),
    NodeSpec("Counters/Inspected", "UInt64", "events published (first publications) since the agent started"),
    NodeSpec("Counters/Pass", "UInt64", "of them with verdict pass"),
    NodeSpec("Counters/Defect", "UInt64", "of them with verdict defect"),
    NodeSpec("Counters/Uncertain", "UInt64", "of them with verdict uncertain"),
    NodeSpec("Counters/Escalated", "UInt64", "of them published by the escalation thread (uncertain frames)"),
    NodeSpec("Health/State", "String", "camera state: new, connecting, online, reconnecting, ended, stopped, ..."),
    NodeSpec("Health/LastError", "String", "the camera's last source error ('' when none)"),
    NodeSpec("Health/FramesRead", "UInt64", "frames the source gave since the camera (re)started"),
    NodeSpec("Health/FramesDropped", "UInt64", "frames read but never inspected (newest frame wins)"),
)

DEVICE_NODES: tuple[NodeSpec, ...] = (
    NodeSpec("DeviceId", "String", "the agent's device_id (MQTT topics' <device>)"),
    NodeSpec("AgentVersion", "String", "the installed edge-agent version"),
    NodeSpec("ModelId", "String", "the running prefilter model ('' in learn mode)"),
    NodeSpec("UptimeSeconds", "UInt64", "seconds since the agent started inspecting"),
    NodeSpec("OutboxBacklog", "UInt64", "events in the outbox not yet acknowledged by the broker"),
    NodeSpec("MqttConnected", "Boolean", "the agent is connected to its MQTT broker"),
)


def camera_node_id(camera: str, path: str = "") -> str:
    """The string NodeId of a camera's folder (``path`` empty) or of one of its variables."""
    return f"Cameras/{camera}" + (f"/{path}" if path else "")


def device_node_id(path: str = "") -> str:
    return "Device" + (f"/{path}" if path else "")


def camera_defaults() -> dict[str, Any]:
    """Every camera variable's value before its first event."""
    return {spec.path: spec.default for spec in CAMERA_NODES}


def event_values(event: TagEvent) -> dict[str, Any]:
    """The last-event variables of ``event``'s camera (the counters are :class:`Tally`'s)."""
    labels = [] if event.verdict == "pass" else list(dict.fromkeys(
        [t.detection.label for t in event.decision.tags] + [d.type for d in event.vlm_defects]))
    codes: list[str] = []
    if event.taxonomy is not None:
        codes = [c for c in dict.fromkeys(event.taxonomy.fields(w).get("code") for w in labels) if c]
    return {
        "Verdict": event.verdict, "DefectLabels": ",".join(labels), "DefectCodes": ",".join(codes),
        "Sequence": event.sequence, "CapturedAt": event.captured_at, "DecidedBy": event.decided_by,
        "EscalationStatus": event.escalation.status, "EventId": event.event_id, "Revision": event.revision,
        "ModelId": event.model_id,
    }


class Tally:
    """Every camera's counters and last-event values, updated by the event fan-out's threads (the inference and
    the escalation thread; a lock between them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}

    def record(self, published: Published) -> dict[str, Any]:
        """Count ``published`` and return its camera's new values (last event and counters)."""
        event = published.event
        values = event_values(event)
        with self._lock:
            counts = self._counts.setdefault(event.camera, dict.fromkeys(
                ("Inspected", "Pass", "Defect", "Uncertain", "Escalated"), 0))
            if event.revision <= 1:
                counts["Inspected"] += 1
                counts[event.verdict.capitalize()] += 1
                counts["Escalated"] += int(published.escalated)
            values.update({f"Counters/{name}": n for name, n in counts.items()})
        return values

    def counts(self, camera: str) -> dict[str, int]:
        with self._lock:
            return dict(self._counts.get(camera, {}))


def device_values(snapshot: AgentSnapshot, version: str) -> dict[str, Any]:
    """The device variables from an ops snapshot."""
    publisher = snapshot.publisher
    return {
        "DeviceId": snapshot.device_id, "AgentVersion": version,
        "ModelId": snapshot.model.model_id if snapshot.model is not None else "",
        "UptimeSeconds": int(snapshot.uptime_s),
        "OutboxBacklog": publisher.pending if publisher is not None else 0,
        "MqttConnected": bool(publisher is not None and publisher.connected),
    }


def camera_health(snapshot: AgentSnapshot) -> dict[str, dict[str, Any]]:
    """Each running camera's health variables, in the snapshot's camera order (the cameras that run now)."""
    return {c.stats.camera_id: {
        "Health/State": c.stats.state, "Health/LastError": c.stats.last_error or "",
        "Health/FramesRead": c.stats.frames_read, "Health/FramesDropped": c.stats.dropped,
    } for c in snapshot.progress.cameras}


def changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``new`` that differ from ``old``."""
    return {k: v for k, v in new.items() if old.get(k, _MISSING) != v}


def specs_by_path(specs: Iterable[NodeSpec]) -> dict[str, NodeSpec]:
    return {s.path: s for s in specs}


_MISSING = object()
