"""Batch tagging's pure logic: item ids, their order, output formats, records, the resume set, the summary.

An *item* is one image file (id: its path as walked, e.g. ``photos/a.png``) or one frame of a video
(``clips/belt.avi#frame=30``; frames count from 0, every ``--video-step``-th one is an item). Items are
ordered by path, then frame number; the output's records are in that order once a run completes.

A *record* is what the output holds for one item (:func:`build_record`): the item id, path and frame,
the frame size, the verdict, ``decided_by``, the tags as the tag event has them (label, confidence,
state, source, and box for a detector), the prefilter's model id and latency, and the escalation status.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from agent.core.event import EscalationOutcome, TagEvent

OutputFormat = Literal["jsonl", "csv", "json"]
FORMATS: tuple[OutputFormat, ...] = ("jsonl", "csv", "json")
_SUFFIXES: dict[str, OutputFormat] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "json"}

# Uncertain items get this escalation outcome when the config names no ``escalation.gateway``.
BATCH_NO_GATEWAY = EscalationOutcome(status="unavailable", reason="batch tagging without a gateway")

CSV_COLUMNS = ("item", "path", "frame", "width", "height", "verdict", "decided_by", "tags", "model",
               "latency_ms", "escalation_status", "escalation_reason")

_FRAME_SUFFIX = re.compile(r"^(?P<path>.*)#frame=(?P<frame>\d+)$")


@dataclasses.dataclass(frozen=True)
class ItemId:
    """One image (``frame`` None) or one video frame (``frame`` counts from 0)."""

    path: str
    frame: int | None = None

    @property
    def text(self) -> str:
        return self.path if self.frame is None else f"{self.path}#frame={self.frame}"

    @property
    def sort_key(self) -> tuple[str, int]:
        return self.path, -1 if self.frame is None else self.frame

    @classmethod
    def parse(cls, text: str) -> ItemId:
        m = _FRAME_SUFFIX.match(text)
        return cls(text) if m is None else cls(m["path"], int(m["frame"]))


def item_sort_key(text: str) -> tuple[str, int]:
    """The order of records: by path, then frame number (numerically, so frame 30 comes before 150)."""
    return ItemId.parse(text).sort_key


def format_for(path: pathlib.Path, requested: str | None) -> OutputFormat:
    """The output format: ``requested`` (``--format``), else the file's suffix; ValueError saying what to do."""
    if requested is not None:
        if requested not in FORMATS:
            raise ValueError(f"--format {requested!r}: expected one of {', '.join(FORMATS)}")
        return FORMATS[FORMATS.index(requested)]
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"--out {path}: cannot tell the format from the suffix {path.suffix or '(none)'!r}; "
                         f"name it .jsonl, .csv or .json, or give --format")
    return fmt


def sniff_format(head: str) -> OutputFormat | Literal["empty", "unknown"]:
    """The format an existing output file is in, from its first characters."""
    text = head.lstrip("\ufeff \t\r\n")
    if not text:
        return "empty"
    if text.startswith("["):
        return "json"
    if text.startswith("{"):
        return "jsonl"
    if text.split("\n", 1)[0].strip().split(",")[: len(CSV_COLUMNS)] == list(CSV_COLUMNS):
        return "csv"
    return "unknown"


def build_record(item: ItemId, event: TagEvent) -> dict[str, Any]:
    """The output record of one item, from the tag event the daemon would publish for it."""
    payload = event.to_payload()
    return {
        "item": item.text,
        "path": item.path,
        "frame": item.frame,
        "width": event.frame_width,
        "height": event.frame_height,
        "verdict": payload["verdict"],
        "decided_by": payload["decided_by"],
        "tags": payload["tags"],
        "prefilter": payload["prefilter"],
        "escalation": payload["escalation"],
    }


def record_to_row(record: Mapping[str, Any]) -> list[str]:
    """A record as a CSV row (:data:`CSV_COLUMNS`); the tags are one JSON cell."""
    esc = record["escalation"]
    return [record["item"], record["path"], "" if record["frame"] is None else str(record["frame"]),
            str(record["width"]), str(record["height"]), record["verdict"], record["decided_by"],
            json.dumps(record["tags"], separators=(",", ":")), record["prefilter"]["model"],
            str(record["prefilter"]["latency_ms"]), esc["status"], esc["reason"] or ""]


@dataclasses.dataclass(frozen=True)
class DoneItem:
    """What the summary needs of an item already in the output."""

    verdict: str
    escalation: str


def done_from_record(record: Mapping[str, Any]) -> tuple[str, DoneItem]:
    """(item id, what was decided) from a JSON record; KeyError/TypeError when it is not one of ours."""
    return str(record["item"]), DoneItem(str(record["verdict"]), str(record["escalation"]["status"]))


def done_from_row(row: Mapping[str, str]) -> tuple[str, DoneItem]:
    """(item id, what was decided) from a CSV row read with the header."""
    return row["item"], DoneItem(row["verdict"], row["escalation_status"])


@dataclasses.dataclass(frozen=True)
class BadInput:
    """A file that was skipped: ``kind`` ``unreadable`` (cannot be read or decoded) or ``not an image``."""

    path: str
    kind: Literal["unreadable", "not an image"]
    reason: str


@dataclasses.dataclass
class Summary:
    """Running totals of one ``edge-agent tag`` run."""

    planned: int = 0
    """items found (video frames estimated from the container until read)"""
    resumed: dict[str, DoneItem] = dataclasses.field(default_factory=dict)
    """items already in the output (not tagged again)"""
    tagged: dict[str, DoneItem] = dataclasses.field(default_factory=dict)
    """items tagged by this run"""
    bad: list[BadInput] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    """wall time of the tagging loop"""
    prefilter_ms: float = 0.0
    """sum of the prefilter latencies of this run's items"""
    interrupted: bool = False

    def add(self, record: Mapping[str, Any]) -> None:
        key, done = done_from_record(record)
        self.tagged[key] = done
        self.prefilter_ms += float(record["prefilter"]["latency_ms"])

    def lines(self) -> list[str]:
        """The summary as printed at the end (or at an interruption)."""
        every = {**self.resumed, **self.tagged}
        verdicts = Counter(d.verdict for d in every.values())
        escalated = sum(1 for d in every.values() if d.escalation != "not_needed")
        statuses = Counter(d.escalation for d in every.values() if d.escalation != "not_needed")
        n_now = len(self.tagged)
        head = "interrupted" if self.interrupted else "done"
        out = [f"{head}: {len(every)} items in the output ({n_now} tagged now, {len(self.resumed)} already there)"]
        out.append("verdicts: " + (", ".join(f"{v} {verdicts[v]}" for v in ("pass", "defect", "uncertain")
                                              if verdicts[v]) or "none"))
        rate = 100.0 * escalated / len(every) if every else 0.0
        out.append(f"escalation: {escalated} of {len(every)} items ({rate:.1f}%)"
                   + (" — " + ", ".join(f"{s} {c}" for s, c in sorted(statuses.items())) if statuses else ""))
        if n_now:
            out.append(f"time per image: {1000.0 * self.seconds / n_now:.1f} ms "
                       f"(prefilter {self.prefilter_ms / n_now:.1f} ms), {n_now / max(self.seconds, 1e-9):.1f} "
                       f"items/s")
        if self.bad:
            out.append(f"skipped {len(self.bad)} file(s):")
            out += [f"  {b.path}: {b.kind} ({b.reason})" for b in sorted(self.bad, key=lambda b: b.path)]
        return out


def sorted_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Records in item order, one per item (the first kept)."""
    seen: dict[str, Mapping[str, Any]] = {}
    for r in records:
        seen.setdefault(str(r["item"]), r)
    return [seen[k] for k in sorted(seen, key=item_sort_key)]
