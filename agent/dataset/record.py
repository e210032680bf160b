"""One recorded frame: what the recorder writes beside the JPEG and what the exporter reads. Pure logic.

A record is a JSON document (schema ``edge-agent/dataset-record/v1``)::

    {"schema": "edge-agent/dataset-record/v1",
     "id": "20261129T015807123456Z_belt_42_1f2e3d4c",   # capture time (UTC), camera, sequence, event id
     "image": "20261129T015807123456Z_belt_42_1f2e3d4c.jpg",
     "kind": "escalated" | "confident_sample",
     "device": "box1", "camera": "belt", "sequence": 42, "event_id": "...", "revision": 1,
     "captured_at": "2026-11-29T01:58:07.123456Z", "recorded_at": "...",
     "frame": {"width": 640, "height": 480},
     "model": {"id": "conveyor-yolov8n.int8@1a2b3c4d5e6f", "digest": "<sha256>", "task": "detect",
               "names": ["scratch", "hole", "stain", "missing"]},
     "detections": [{"label": "scratch", "class_id": 0, "confidence": 0.41, "box": [x1, y1, x2, y2]}],
     "triage": {"verdict": "uncertain", "tags": [{..detection.., "state": "uncertain"}]},
     "vlm": {"verdict": "defect", "tags": [["scratch", 0.9]], "defects": [{"type": ..., "location": ...,
             "severity": ...}], "description": "...", "model": "llava:7b"} | null}

``detections`` are every detection the prefilter returned (above its ``model.min_score`` floor), boxes in
frame pixels; ``triage`` is what the triage made of them. ``vlm`` is null for a confident sample (labelled by
the prefilter alone). A classifier's detections are its classes with their probabilities, no box.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

__all__ = ["RECORD_SCHEMA", "DatasetRecord", "RecordError", "RecordedDetection", "VlmLabel", "check_class_name",
           "check_record_id", "record_id"]

RECORD_SCHEMA = "edge-agent/dataset-record/v1"
RecordKind = Literal["escalated", "confident_sample"]
KINDS: tuple[RecordKind, ...] = ("escalated", "confident_sample")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# a record id is a file name stem: it starts with a letter or digit and has no path separator, so
# `<id>.jpg` and `<id>.json` stay in the folder they are joined to (an id like ../../x is refused)
_RECORD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_MAX_CLASS_NAME = 100


class RecordError(ValueError):
    """A record document is not a valid v1 record; the message names the field."""


@dataclasses.dataclass(frozen=True)
class RecordedDetection:
    label: str
    class_id: int
    confidence: float
    box: tuple[float, float, float, float] | None  # x1, y1, x2, y2 in frame pixels; None for a classifier
    state: str | None = None  # triage tags only: accepted | uncertain

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "class_id": self.class_id,
                               "confidence": round(self.confidence, 5),
                               "box": None if self.box is None else [round(v, 2) for v in self.box]}
        if self.state is not None:
            out["state"] = self.state
        return out


@dataclasses.dataclass(frozen=True)
class VlmLabel:
    """The VLM's answer as the published event carried it."""

    verdict: str  # pass | defect | uncertain
    tags: tuple[tuple[str, float], ...]
    defects: tuple[dict[str, str], ...]
    description: str | None
    model: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "tags": [[label, round(conf, 4)] for label, conf in self.tags],
                "defects": [dict(d) for d in self.defects], "description": self.description, "model": self.model}


@dataclasses.dataclass(frozen=True)
class DatasetRecord:
    id: str
    kind: RecordKind
    device: str
    camera: str
    sequence: int
    event_id: str
    revision: int
    captured_at: datetime.datetime
    recorded_at: datetime.datetime
    width: int
    height: int
    model_id: str
    model_digest: str | None
    task: str  # detect | classify | anomaly
    names: tuple[str, ...]
    detections: tuple[RecordedDetection, ...]
    verdict: str  # the triage's
    tags: tuple[RecordedDetection, ...]  # the triage's, with state
    vlm: VlmLabel | None

    def __post_init__(self) -> None:
        check_record_id(self.id)

    @property
    def image(self) -> str:
        return f"{self.id}.jpg"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RECORD_SCHEMA, "id": self.id, "image": self.image, "kind": self.kind,
            "device": self.device, "camera": self.camera, "sequence": self.sequence, "event_id": self.event_id,
            "revision": self.revision, "captured_at": _stamp(self.captured_at),
            "recorded_at": _stamp(self.recorded_at), "frame": {"width": self.width, "height": self.height},
            "model": {"id": self.model_id, "digest": self.model_digest, "task": self.task,
                      "names": list(self.names)},
            "detections": [d.to_dict() for d in self.detections],
            "triage": {"verdict": self.verdict, "tags": [t.to_dict() for t in self.tags]},
            "vlm": None if self.vlm is None else self.vlm.to_dict(),
        }

    @classmethod
    def from_dict(cls, doc: Any) -> DatasetRecord:
        """A record from its JSON document; RecordError naming the first bad field."""
        d = _mapping(doc, "the record")
        if d.get("schema") != RECORD_SCHEMA:
            raise RecordError(f"schema: expected {RECORD_SCHEMA!r}, got {d.get('schema')!r}")
        kind = _str(d, "kind")
        if kind not in KINDS:
            raise RecordError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        frame = _mapping(d.get("frame"), "frame")
        model = _mapping(d.get("model"), "model")
        names = model.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise RecordError(f"model.names: expected a non-empty list of class names, got {names!r}")
        triage = _mapping(d.get("triage"), "triage")
        vlm = d.get("vlm")
        record = cls(
            id=_str(d, "id"), kind=kind, device=_str(d, "device"), camera=_str(d, "camera"),
            sequence=_int(d, "sequence"), event_id=_str(d, "event_id"), revision=_int(d, "revision"),
            captured_at=_time(d, "captured_at"), recorded_at=_time(d, "recorded_at"),
            width=_int(frame, "width", "frame."), height=_int(frame, "height", "frame."),
            model_id=_str(model, "id", "model."), model_digest=_opt_str(model, "digest", "model."),
            task=_str(model, "task", "model."), names=tuple(names),
            detections=_detections(d.get("detections"), "detections"),
            verdict=_str(triage, "verdict", "triage."), tags=_detections(triage.get("tags"), "triage.tags"),
            vlm=None if vlm is None else _vlm(vlm))
        if record.kind == "escalated" and record.vlm is None:
            raise RecordError("vlm: an escalated record carries the VLM's answer, got null")
        if d.get("image") != record.image:
            raise RecordError(f"image: expected {record.image!r}, got {d.get('image')!r}")
        if record.width < 1 or record.height < 1:
            raise RecordError(f"frame: expected a positive width and height, got {record.width}x{record.height}")
        return record


def record_id(captured_at: datetime.datetime, camera: str, sequence: int, event_id: str) -> str:
    """A file-name-safe id that sorts by capture time: ``<UTC stamp>_<camera>_<sequence>_<event id[:8]>``."""
    stamp = captured_at.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}_{_UNSAFE.sub('-', camera)[:100]}_{sequence}_{_UNSAFE.sub('-', event_id[:8])}"


def check_record_id(value: str) -> str:
    """``value`` when it is a record id (what :func:`record_id` makes: letters, digits, ``_ . -``, starting
    with a letter or digit, at most 200 characters); RecordError otherwise."""
    if not _RECORD_ID.fullmatch(value):
        raise RecordError(f"id: expected a file name stem of letters, digits, '_', '.' and '-' (starting with a "
                          f"letter or digit, at most 200 characters), got {value[:80]!r}")
    return value


def check_class_name(name: str, where: str = "class name") -> str:
    """``name`` when it can be a folder name and a YAML value as it is: not empty, not ``.`` or ``..``, no
    path separator, no control character, no surrounding space, at most 100 characters; RecordError otherwise."""
    problem = ("is empty" if not name else
               f"is longer than {_MAX_CLASS_NAME} characters" if len(name) > _MAX_CLASS_NAME else
               "is '.' or '..'" if name in (".", "..") else
               "has a path separator ('/' or '\\')" if "/" in name or "\\" in name else
               "has a control character" if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name) else
               "starts or ends with a space" if name != name.strip() else "")
    if problem:
        raise RecordError(f"{where} {name[:80]!r} {problem}; a class name becomes a folder name")
    return name


def _stamp(ts: datetime.datetime) -> str:
    return ts.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RecordError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _str(d: Mapping[str, Any], key: str, prefix: str = "") -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise RecordError(f"{prefix}{key}: expected a non-empty string, got {value!r}")
    return value


def _opt_str(d: Mapping[str, Any], key: str, prefix: str = "") -> str | None:
    return None if d.get(key) is None else _str(d, key, prefix)


def _int(d: Mapping[str, Any], key: str, prefix: str = "") -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RecordError(f"{prefix}{key}: expected an integer, got {value!r}")
    return value


def _number(d: Mapping[str, Any], key: str, where: str) -> float:
    value = d.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RecordError(f"{where}.{key}: expected a number, got {value!r}")
    return float(value)


def _time(d: Mapping[str, Any], key: str) -> datetime.datetime:
    text = _str(d, key)
    try:
        ts = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RecordError(f"{key}: expected an RFC 3339 time, got {text!r}") from None
    if ts.tzinfo is None:
        raise RecordError(f"{key}: expected a time with its zone (UTC, 'Z'), got {text!r}")
    return ts


def _detections(value: Any, where: str) -> tuple[RecordedDetection, ...]:
    if not isinstance(value, list):
        raise RecordError(f"{where}: expected a list, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        d = _mapping(item, at)
        box = d.get("box")
        if box is not None and (not isinstance(box, list) or len(box) != 4
                                or not all(isinstance(v, int | float) for v in box)):
            raise RecordError(f"{at}.box: expected [x1, y1, x2, y2] or null, got {box!r}")
        state = d.get("state")
        if state is not None and state not in ("accepted", "uncertain"):
            raise RecordError(f"{at}.state: expected accepted or uncertain, got {state!r}")
        out.append(RecordedDetection(
            label=_str(d, "label", f"{at}."), class_id=_int(d, "class_id", f"{at}."),
            confidence=_number(d, "confidence", at),
            box=None if box is None else (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            state=state))
    return tuple(out)


def _vlm(value: Any) -> VlmLabel:
    d = _mapping(value, "vlm")
    verdict = _str(d, "verdict", "vlm.")
    if verdict not in ("pass", "defect", "uncertain"):
        raise RecordError(f"vlm.verdict: expected pass, defect or uncertain, got {verdict!r}")
    tags = d.get("tags")
    if not isinstance(tags, list) or not all(
            isinstance(t, list) and len(t) == 2 and isinstance(t[0], str) and isinstance(t[1], int | float)
            for t in tags):
        raise RecordError(f"vlm.tags: expected a list of [label, confidence], got {tags!r}")
    defects = d.get("defects")
    if not isinstance(defects, list) or not all(isinstance(x, Mapping) for x in defects):
        raise RecordError(f"vlm.defects: expected a list of objects, got {defects!r}")
    return VlmLabel(verdict=verdict, tags=tuple((str(t[0]), float(t[1])) for t in tags),
                    defects=tuple(_defect(x) for x in cast(Sequence[Mapping[str, Any]], defects)),
                    description=d.get("description") if isinstance(d.get("description"), str) else None,
                    model=d.get("model") if isinstance(d.get("model"), str) else None)


def _defect(d: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(d.get(key, "")) for key in ("type", "location", "severity")}
