"""The tag event's bytes are what ``json.dumps(to_payload(), separators=(",", ":"))`` writes, timestamps what
``strftime`` writes, and the tags topic what the checked function builds: the faster paths change no byte."""

from __future__ import annotations

import dataclasses
import datetime
import json

import pytest

from agent.config.models import TriageConfig
from agent.core.detections import Detection
from agent.core.event import EscalationOutcome, ImageRef, TagEvent, VlmDefect, VlmTag, build_event, rfc3339
from agent.core.zones import ZoneReport
from agent.publish.topics import tags_topic
from agent.triage.policy import triage

UTC = datetime.timezone.utc


@pytest.mark.parametrize("ts", [
    datetime.datetime(2026, 12, 5, 7, 30, 1, 123456, tzinfo=UTC),
    datetime.datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC),  # no fraction: still six digits
    datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime.datetime(1000, 1, 1, tzinfo=UTC),
    datetime.datetime(999, 1, 1, tzinfo=UTC),  # strftime does not pad the year: neither do we
    datetime.datetime(2026, 6, 1, 1, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))),
])
def test_timestamps_are_what_strftime_writes(ts: datetime.datetime) -> None:
    assert rfc3339(ts) == ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        rfc3339(datetime.datetime(2026, 1, 1))


def _events() -> list[TagEvent]:
    detections = [Detection("scratch", 0, 0.91234567, (10.04, 20.05, 110.0, 220.96)),
                  Detection("Kratzer \u00e4\u00f6\u00fc \u5212\u75d5 \"quoted\" \\ \n", 1, 0.5, (1.0, 2.0, 3.0, 4.0)),
                  Detection("whole-frame", 2, 0.77, None)]
    decision = triage(detections, TriageConfig())
    base = build_event(device="dev-\u00e9", camera="cam1", sequence=2**40, frame_width=1280, frame_height=960,
                       captured_at=datetime.datetime(2026, 12, 5, 7, 30, 1, 5, tzinfo=UTC), decision=decision,
                       model_id="conveyor-yolov8n@0123", prefilter_latency_ms=1e-7)
    answered = EscalationOutcome("answered", None, "llava:7b", 1234.5678, "a dent, \u00bc inch \U0001F600")
    return [
        base,
        dataclasses.replace(base, prefilter_latency_ms=float("nan")),
        dataclasses.replace(base, prefilter_latency_ms=1e22, frame_width=0, revision=2, escalation=answered,
                            vlm_tags=(VlmTag("dent", 0.123456789, "accepted"),),
                            vlm_defects=(VlmDefect("dent", "upper left", "high"),)),
        dataclasses.replace(base, zones=ZoneReport(("belt",), ("edge",), "centre", 3, (0, 0, 640, 480)),
                            image=ImageRef(base.event_id, "cam1/2026-12-05/073001.000005_x.jpg")),
        dataclasses.replace(base, escalation=EscalationOutcome("timeout", "no answer in 2.0 s")),
    ]


@pytest.mark.parametrize("index", range(5))
def test_payload_bytes_are_what_json_dumps_writes(index: int) -> None:
    event = _events()[index]
    assert event.to_json() == json.dumps(event.to_payload(), separators=(",", ":")).encode()


def test_the_tags_topic_is_built_and_checked_as_before() -> None:
    assert tags_topic("plant1/line3/edge", "dev1", "cam1") == "plant1/line3/edge/dev1/cam1/tags"
    assert tags_topic("plant1/line3/edge", "dev1", "cam1") == "plant1/line3/edge/dev1/cam1/tags"  # remembered
    for _ in range(2):  # a bad camera id is refused every time, not remembered
        with pytest.raises(ValueError, match="camera 'a/b' is not a valid topic level"):
            tags_topic("edge", "dev1", "a/b")
