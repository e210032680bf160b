"""Batch tagging's pure logic: item ids and order, formats, records, the resume set, the summary."""

from __future__ import annotations

import datetime
import json
import pathlib

import pytest

from agent.core.decision import TriageDecision, TriagedTag
from agent.core.detections import Detection
from agent.core.event import TagEvent, build_event
from agent.escalation.merge import merge
from agent.tooling.batch.items import (
    BATCH_NO_GATEWAY,
    CSV_COLUMNS,
    BadInput,
    DoneItem,
    ItemId,
    Summary,
    build_record,
    format_for,
    item_sort_key,
    record_to_row,
    sniff_format,
    sorted_records,
)
from agent.tooling.batch.sources import sniff_kind


@pytest.mark.parametrize(("text", "path", "frame"), [
    ("a/b.png", "a/b.png", None),                          # an image
    ("clip.avi#frame=30", "clip.avi", 30),                 # a video frame
    ("odd#frame=x.png", "odd#frame=x.png", None),          # '#frame=' not followed by digits only: a file name
])
def test_item_id_round_trip(text: str, path: str, frame: int | None) -> None:
    item = ItemId.parse(text)
    assert (item.path, item.frame) == (path, frame)
    assert item.text == text


def test_items_sort_by_path_then_frame_number() -> None:
    texts = ["b.png", "a.avi#frame=150", "a.avi#frame=30", "a.avi#frame=0", "a.png"]
    # frame 30 before 150 (numbers, not strings); a.avi's frames before a.png
    assert sorted(texts, key=item_sort_key) == ["a.avi#frame=0", "a.avi#frame=30", "a.avi#frame=150", "a.png",
                                                "b.png"]


@pytest.mark.parametrize(("name", "requested", "expected"), [
    ("out.jsonl", None, "jsonl"),      # from the suffix
    ("out.NDJSON", None, "jsonl"),     # case-insensitive, the other JSON Lines suffix
    ("out.csv", None, "csv"),
    ("out.json", None, "json"),
    ("out.txt", "csv", "csv"),         # --format wins
])
def test_format_for(name: str, requested: str | None, expected: str) -> None:
    assert format_for(pathlib.Path(name), requested) == expected


@pytest.mark.parametrize(("name", "requested", "message"), [
    ("out.txt", None, "cannot tell the format"),
    ("out.jsonl", "xml", "expected one of jsonl, csv, json"),
])
def test_format_for_refuses(name: str, requested: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        format_for(pathlib.Path(name), requested)


@pytest.mark.parametrize(("head", "expected"), [
    ("", "empty"),
    ("  \n", "empty"),
    ("[\n {", "json"),
    ('{"item":', "jsonl"),
    (",".join(CSV_COLUMNS) + "\r\nx,", "csv"),
    ("hello world", "unknown"),
])
def test_sniff_format(head: str, expected: str) -> None:
    assert sniff_format(head) == expected


@pytest.mark.parametrize(("head", "suffix", "expected"), [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", ".bin", "image"),     # JPEG by content, whatever the suffix
    (b"\x89PNG\r\n\x1a\n\x00\x00", ".jpg", "image"),          # PNG named .jpg
    (b"BM6\x00\x00\x00", "", "image"),                         # BMP
    (b"II*\x00\x08\x00", ".tif", "image"),                    # TIFF little-endian
    (b"MM\x00*\x00\x00", ".tiff", "image"),                   # TIFF big-endian
    (b"RIFF\x00\x00\x00\x00AVI LIST", ".dat", "video"),       # AVI by content
    (b"\x00\x00\x00\x20ftypisom", ".bin", "video"),           # MP4
    (b"hello", ".mp4", "video"),                               # a video suffix (OpenCV decides later)
    (b"hello", ".png", None),                                  # a text file named .png
])
def test_sniff_kind(head: bytes, suffix: str, expected: str | None) -> None:
    assert sniff_kind(head, suffix) == expected


def _decision(confidence: float, accepted: bool) -> TriageDecision:
    det = Detection(class_id=0, label="scratch", confidence=confidence, box=(1.0, 2.0, 30.0, 40.0))
    if accepted:
        return TriageDecision("defect", (TriagedTag(det, "accepted"),))
    return TriageDecision("uncertain", (TriagedTag(det, "uncertain"),))


def _event(decision: TriageDecision) -> TagEvent:
    return build_event(device="d", camera="batch", sequence=1,
                       captured_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
                       frame_width=320, frame_height=240, decision=decision, model_id="m@1",
                       prefilter_latency_ms=5.123)


def test_record_of_a_decided_and_an_uncertain_item() -> None:
    decided = build_record(ItemId("a.png"), _event(_decision(0.9, accepted=True)))
    assert decided == {
        "item": "a.png", "path": "a.png", "frame": None, "width": 320, "height": 240,
        "verdict": "defect", "decided_by": "prefilter",
        "tags": [{"label": "scratch", "confidence": 0.9, "box": [1.0, 2.0, 30.0, 40.0], "state": "accepted",
                  "source": "prefilter"}],
        "prefilter": {"model": "m@1", "latency_ms": 5.12},
        "escalation": {"status": "not_needed", "reason": None, "model": None, "latency_ms": None,
                       "description": None},
    }
    uncertain = build_record(ItemId("v.avi", 15), merge(_event(_decision(0.4, accepted=False)), BATCH_NO_GATEWAY, None))
    assert (uncertain["item"], uncertain["frame"], uncertain["verdict"]) == ("v.avi#frame=15", 15, "uncertain")
    assert uncertain["escalation"]["status"] == "unavailable"
    assert uncertain["escalation"]["reason"] == "batch tagging without a gateway"
    row = record_to_row(uncertain)
    assert len(row) == len(CSV_COLUMNS)
    assert dict(zip(CSV_COLUMNS, row, strict=True))["escalation_status"] == "unavailable"
    assert json.loads(dict(zip(CSV_COLUMNS, row, strict=True))["tags"]) == uncertain["tags"]


def test_sorted_records_orders_and_dedupes() -> None:
    records = [{"item": "b.png", "n": 1}, {"item": "a.png", "n": 2}, {"item": "b.png", "n": 3}]
    assert sorted_records(records) == [{"item": "a.png", "n": 2}, {"item": "b.png", "n": 1}]


def test_summary_counts_resumed_and_tagged_items() -> None:
    s = Summary(planned=4)
    s.resumed = {"a.png": DoneItem("pass", "not_needed"), "b.png": DoneItem("uncertain", "unavailable")}
    s.add({"item": "c.png", "verdict": "defect", "escalation": {"status": "not_needed"},
           "prefilter": {"latency_ms": 4.0}})
    s.add({"item": "d.png", "verdict": "uncertain", "escalation": {"status": "unavailable"},
           "prefilter": {"latency_ms": 6.0}})
    s.seconds = 0.02
    s.bad = [BadInput("z.txt", "not an image", "x"), BadInput("y.jpg", "unreadable", "cannot be decoded")]
    lines = s.lines()
    assert lines[0] == "done: 4 items in the output (2 tagged now, 2 already there)"
    assert lines[1] == "verdicts: pass 1, defect 1, uncertain 2"
    assert lines[2] == "escalation: 2 of 4 items (50.0%) — unavailable 2"
    assert lines[3] == "time per image: 10.0 ms (prefilter 5.0 ms), 100.0 items/s"
    # bad files listed by path
    assert lines[4:] == ["skipped 2 file(s):", "  y.jpg: unreadable (cannot be decoded)",
                         "  z.txt: not an image (x)"]
