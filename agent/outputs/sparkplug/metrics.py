"""What a tag event says as Sparkplug metrics: each device metric's name and data type, and the values of one
event (with its camera's counters). Pure logic: no I/O, no protobuf.

A stored record is the JSON of :class:`DeviceRecord`: the event's values are fixed when the event is committed,
so a DDATA sent late (store-and-forward) carries what was true at capture time.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping

from agent.config.sparkplug import DeviceMetric
from agent.core.event import TagEvent

__all__ = ["DEVICE_TYPES", "NODE_TYPES", "CameraTally", "DeviceRecord", "MetricValue", "defect_codes", "event_values",
           "record_of"]

# Sparkplug B data type codes (spec 6.4.16), as in proto/sparkplug_b/sparkplug_b.proto
INT64, UINT64, BOOLEAN, STRING, DATETIME = 4, 8, 11, 12, 13

MetricValue = str | int | bool | None

DEVICE_TYPES: Mapping[DeviceMetric, int] = {
    "Inspection/Verdict": STRING,  # pass | defect | uncertain
    "Inspection/Defect Codes": STRING,  # comma-separated; "" for a pass
    "Inspection/Sequence": UINT64,  # the camera's frame sequence
    "Inspection/Event Id": STRING,  # the tag event's event_id (dedupe key, same as the JSON event's)
    "Inspection/Captured At": DATETIME,  # ms since the epoch, UTC
    "Inspection/Decided By": STRING,  # prefilter | vlm
    "Inspection/Model Id": STRING,  # the prefilter model's id
    "Inspection/Escalation": STRING,  # the escalation status (not_needed, answered, unavailable, ...)
    "Counters/Inspected": UINT64,  # events of this camera since the agent started (first publications)
    "Counters/Pass": UINT64,
    "Counters/Defect": UINT64,
    "Counters/Uncertain": UINT64,
}

NODE_TYPES: Mapping[str, int] = {
    "bdSeq": INT64,
    "Node Control/Rebirth": BOOLEAN,
    "Properties/Agent Version": STRING,
    "Properties/Device Id": STRING,  # the agent's device_id (the JSON topics' <device>)
    "Health/Backlog": UINT64,  # events waiting in the Sparkplug store
}


@dataclasses.dataclass
class CameraTally:
    """One camera's counters since the agent started."""

    inspected: int = 0
    passed: int = 0
    defect: int = 0
    uncertain: int = 0

    def count(self, verdict: str) -> None:
        self.inspected += 1
        if verdict == "pass":
            self.passed += 1
        elif verdict == "defect":
            self.defect += 1
        else:
            self.uncertain += 1


@dataclasses.dataclass(frozen=True)
class DeviceRecord:
    """One event as the store keeps it: the camera, when it was captured (ms) and the chosen metrics' values."""

    camera: str
    event_id: str
    captured_ms: int
    values: Mapping[str, MetricValue]

    def to_json(self) -> bytes:
        return json.dumps({"camera": self.camera, "event_id": self.event_id, "captured_ms": self.captured_ms,
                           "values": dict(self.values)}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DeviceRecord:
        """ValueError (a damaged store row) when ``data`` is not a record."""
        try:
            doc = json.loads(data)
            return cls(str(doc["camera"]), str(doc["event_id"]), int(doc["captured_ms"]), dict(doc["values"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a Sparkplug store record ({exc})") from exc


def defect_codes(event: TagEvent) -> list[str]:
    """The codes behind the verdict, each once, in order: for a defect the accepted tags and the VLM's defects,
    for an uncertain frame its uncertain tags, for a pass none. A tag's taxonomy code when it has one, else its
    raw label (prefilter tags first, then the VLM's)."""
    if event.verdict == "pass":
        return []
    wanted = "accepted" if event.verdict == "defect" else "uncertain"
    words = [t.detection.label for t in event.decision.tags if t.state == wanted]
    words += [t.label for t in event.vlm_tags if t.state == wanted]
    if event.verdict == "defect" and event.escalation.status in ("answered", "cached"):
        words += [d.type for d in event.vlm_defects]
    taxonomy = event.taxonomy
    codes = [(taxonomy.fields(w)["code"] if taxonomy is not None else None) or w for w in words]
    return list(dict.fromkeys(codes))


def event_values(event: TagEvent, tally: CameraTally, metrics: Iterable[DeviceMetric]) -> dict[str, MetricValue]:
    """The chosen metrics' values for ``event``, its camera's counters as they are after it."""
    captured_ms = int(event.captured_at.timestamp() * 1000)
    every: dict[DeviceMetric, MetricValue] = {
        "Inspection/Verdict": event.verdict,
        "Inspection/Defect Codes": ",".join(defect_codes(event)),
        "Inspection/Sequence": event.sequence,
        "Inspection/Event Id": event.event_id,
        "Inspection/Captured At": captured_ms,
        "Inspection/Decided By": event.decided_by,
        "Inspection/Model Id": event.model_id,
        "Inspection/Escalation": event.escalation.status,
        "Counters/Inspected": tally.inspected,
        "Counters/Pass": tally.passed,
        "Counters/Defect": tally.defect,
        "Counters/Uncertain": tally.uncertain,
    }
    return {name: every[name] for name in metrics}


def record_of(event: TagEvent, tally: CameraTally, metrics: Iterable[DeviceMetric]) -> DeviceRecord:
    """The store's record of ``event``; a first publication (revision 1) counts in ``tally`` first (a late VLM
    answer, revision 2, is the same frame: its record carries the counters unchanged)."""
    if event.revision == 1:
        tally.count(event.verdict)
    return DeviceRecord(event.camera, event.event_id, int(event.captured_at.timestamp() * 1000),
                        event_values(event, tally, metrics))

