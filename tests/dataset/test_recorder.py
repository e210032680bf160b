"""The dataset recorder on its own: what is recorded, bounds and eviction, the bounded queue, restart."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
import time
from typing import Any

import cv2
import pytest

from agent.config.models import DatasetConfig
from agent.core.event import EscalationOutcome
from agent.dataset.record import DatasetRecord
from agent.dataset.recorder import DatasetRecorder, ModelRef
from agent.dataset.store import RecordStore
from agent.errors import DatasetError
from agent.runtime.fanout import EventFanout
from agent.runtime.listeners import RecorderListener
from tests.dataset.recording import MODEL, SIZE, answered, det, inspection, without_answer


def recorder(root: pathlib.Path, *, model: ModelRef = MODEL, ttl: float = 5.0, start: bool = True,
             **config: Any) -> DatasetRecorder:
    cfg = DatasetConfig.model_validate({"confident_sample": 0.0, **config})
    store = RecordStore.open(root, cfg.max_frames, cfg.max_bytes)
    rec = DatasetRecorder(cfg, store, device="box1", cameras=["belt"], model=lambda: model, pending_ttl_s=ttl,
                          rng=random.Random(1))
    if start:
        rec.start()
    return rec


def records(root: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((root / "records").glob("*.json"))]


UNCERTAIN = [det("scratch", 0.4, (20, 30, 60, 50)), det("stain", 0.1, (80, 10, 100, 30))]  # the second below reject


def test_an_answered_escalation_is_recorded_with_the_frame_the_detections_and_the_answer(
        tmp_path: pathlib.Path) -> None:
    rec = recorder(tmp_path)
    insp = inspection(UNCERTAIN, sequence=7)
    assert insp.decision.needs_escalation
    rec.observe(insp)
    rec.outcome(answered(insp.event, "defect", ["scratch"]))
    rec.stop()
    [doc] = records(tmp_path)
    assert DatasetRecord.from_dict(doc).kind == "escalated"
    assert (doc["camera"], doc["sequence"], doc["event_id"]) == ("belt", 7, insp.event.event_id)
    assert doc["model"] == {"id": MODEL.model_id, "digest": MODEL.digest, "task": "detect", "names": list(MODEL.names)}
    # every raw detection, the one below the triage's reject too, with its box in frame pixels
    assert [(d["label"], d["confidence"], d["box"]) for d in doc["detections"]] == [
        ("scratch", 0.4, [20, 30, 60, 50]), ("stain", 0.1, [80, 10, 100, 30])]
    assert doc["triage"] == {"verdict": "uncertain", "tags": [
        {"label": "scratch", "class_id": 0, "confidence": 0.4, "box": [20, 30, 60, 50], "state": "uncertain"}]}
    assert doc["vlm"]["verdict"] == "defect" and doc["vlm"]["tags"] == [["scratch", 0.9]]
    assert doc["vlm"]["defects"] == [{"type": "scratch", "location": "on the part", "severity": "medium"}]
    image = cv2.imread(str(tmp_path / "records" / doc["image"]))
    assert image is not None and image.shape == (SIZE[1], SIZE[0], 3)  # the full frame
    assert rec.stats().recorded == {"escalated": 1, "confident_sample": 0}


def test_an_outcome_published_before_the_observation_still_records(tmp_path: pathlib.Path) -> None:
    rec = recorder(tmp_path)
    insp = inspection(UNCERTAIN)
    rec.outcome(answered(insp.event))  # a fast answer: the escalation thread beat the inference thread
    rec.observe(insp)
    rec.stop()
    assert len(records(tmp_path)) == 1


@pytest.mark.parametrize("status", ["unavailable", "rate_limited", "rejected", "invalid_answer"])
def test_nothing_is_recorded_when_the_vlm_did_not_answer(tmp_path: pathlib.Path, status: str) -> None:
    rec = recorder(tmp_path)
    first, second = inspection(UNCERTAIN, sequence=1), inspection(UNCERTAIN, sequence=2)
    rec.observe(first)
    rec.outcome(without_answer(first.event, status))
    rec.outcome(without_answer(second.event, status))  # refused inside submit: before the observation
    rec.observe(second)
    rec.stop()
    assert records(tmp_path) == []
    stats = rec.stats()
    assert stats.not_answered == 2 and stats.pending == 0


def test_a_timeout_records_nothing_unless_the_answer_comes_as_revision_2(tmp_path: pathlib.Path) -> None:
    rec = recorder(tmp_path, ttl=0.2)
    late, never = inspection(UNCERTAIN, sequence=1), inspection(UNCERTAIN, sequence=2)
    for insp in (late, never):
        rec.observe(insp)
        rec.outcome(without_answer(insp.event, "timeout"))
    rec.outcome(answered(late.event, revision=2))
    time.sleep(0.25)
    rec.stop()
    [doc] = records(tmp_path)
    assert (doc["sequence"], doc["revision"]) == (1, 2)
    assert rec.stats().not_answered == 1 and rec.stats().pending == 0


def test_cached_frames_and_cameras_that_do_not_record_are_not_recorded(tmp_path: pathlib.Path) -> None:
    rec = recorder(tmp_path, confident_sample=1.0)
    cached = inspection(UNCERTAIN, sequence=1)
    rec.observe(cached)
    rec.outcome(dataclasses.replace(answered(cached.event), escalation=EscalationOutcome(
        "cached", reason="near-duplicate of frame 0", model="llava:7b")))
    other = inspection(UNCERTAIN, camera="dock", sequence=2)
    rec.observe(other)
    rec.outcome(answered(other.event))
    rec.observe(inspection(camera="dock", sequence=3))  # confident, but dock does not record
    rec.stop()
    assert records(tmp_path) == []


def test_confident_frames_are_sampled_and_labelled_by_the_prefilter_alone(tmp_path: pathlib.Path) -> None:
    rec = recorder(tmp_path, confident_sample=0.25, queue_size=1024)
    for seq in range(1, 401):
        rec.observe(inspection([det("hole", 0.9)] if seq % 2 else [], sequence=seq, seconds=seq))
    rec.stop()
    docs = records(tmp_path)
    assert 60 <= len(docs) <= 140  # 100 expected of 400 at 0.25
    assert {d["kind"] for d in docs} == {"confident_sample"} and all(d["vlm"] is None for d in docs)
    assert {d["triage"]["verdict"] for d in docs} == {"pass", "defect"}


def test_bounds_evict_the_oldest_by_capture_time(tmp_path: pathlib.Path) -> None:
    rec = recorder(tmp_path, max_frames=3)
    for seq, seconds in enumerate([50.0, 10.0, 40.0, 20.0, 30.0], start=1):  # written out of capture order
        insp = inspection(UNCERTAIN, sequence=seq, seconds=seconds)
        rec.observe(insp)
        rec.outcome(answered(insp.event))
    rec.stop()
    assert sorted(d["sequence"] for d in records(tmp_path)) == [1, 3, 5]  # 50 s, 40 s, 30 s are the newest
    assert rec.stats().evicted == 2 and rec.stats().frames == 3
    assert len(list((tmp_path / "records").iterdir())) == 6  # no orphan JPEG left by an eviction


def test_the_byte_bound_holds(tmp_path: pathlib.Path) -> None:
    rec = recorder(tmp_path, max_bytes=1024 * 1024, confident_sample=1.0, queue_size=1024)
    for seq in range(1, 61):  # noise frames: ~24 kB each at quality 95
        rec.observe(inspection(sequence=seq, seconds=seq))
    rec.stop()
    stats = rec.stats()
    on_disk = sum(p.stat().st_size for p in (tmp_path / "records").iterdir())
    assert on_disk == stats.bytes <= 1024 * 1024 and stats.evicted > 0
    assert stats.frames + stats.evicted == 60


def test_a_full_queue_drops_and_counts_and_never_blocks_inference(tmp_path: pathlib.Path) -> None:
    rec = recorder(tmp_path, start=False, queue_size=2, confident_sample=1.0)  # no writer yet: the queue fills
    t0 = time.perf_counter()
    for seq in range(1, 11):
        rec.observe(inspection(sequence=seq, seconds=seq))
    assert time.perf_counter() - t0 < 0.5
    assert rec.stats().dropped["queue_full"] == 8 and rec.stats().queued == 2
    rec.start()
    rec.stop()
    assert len(records(tmp_path)) == 2


def test_too_many_frames_waiting_for_answers_drop_the_oldest(tmp_path: pathlib.Path) -> None:
    rec = recorder(tmp_path, max_pending=2)
    frames = [inspection(UNCERTAIN, sequence=seq) for seq in (1, 2, 3)]
    for insp in frames:
        rec.observe(insp)
    for insp in frames:
        rec.outcome(answered(insp.event))
    rec.stop()
    assert sorted(d["sequence"] for d in records(tmp_path)) == [2, 3]
    assert rec.stats().dropped["pending_full"] == 1


def test_a_frame_of_a_model_swapped_out_meanwhile_is_dropped_not_mislabelled(tmp_path: pathlib.Path) -> None:
    rec = recorder(tmp_path, model=ModelRef("new@ffffffffffff", None, "detect", ("a", "b")))
    insp = inspection(UNCERTAIN)
    rec.observe(insp)
    rec.outcome(answered(insp.event))
    rec.stop()
    assert records(tmp_path) == [] and rec.stats().dropped["model_changed"] == 1


def test_the_recording_survives_a_restart_and_an_interrupted_write_leaves_no_half_record(
        tmp_path: pathlib.Path) -> None:
    rec = recorder(tmp_path)
    for seq in range(1, 5):
        insp = inspection(UNCERTAIN, sequence=seq, seconds=seq)
        rec.observe(insp)
        rec.outcome(answered(insp.event))
    rec.stop()
    folder = tmp_path / "records"
    size = sum(p.stat().st_size for p in folder.iterdir())
    # a crash mid-write: a temp file, and a JPEG whose record was never committed
    (folder / "20260101T000000000000Z_belt_9_deadbeef.json.tmp").write_bytes(b'{"schema": "edge-')
    (folder / "20260101T000000000000Z_belt_9_deadbeef.jpg").write_bytes(b"\xff\xd8")
    store = RecordStore.open(tmp_path, 5000, 1 << 30)
    assert len(store) == 4 and store.bytes == size and store.repaired == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{i}.{ext}" for i in store.ids() for ext in ("jpg", "json"))
    # lower bounds apply at open: the oldest go
    smaller = RecordStore.open(tmp_path, 2, 1 << 30)
    assert len(smaller) == 2 and smaller.evicted == 2
    assert [DatasetRecord.from_dict(d).sequence for d in records(tmp_path)] == [3, 4]


def test_a_disk_error_is_counted_and_leaves_nothing_half_written(tmp_path: pathlib.Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rec = recorder(tmp_path)
    real_replace = os.replace

    def failing(src: Any, dst: Any) -> None:
        if str(dst).endswith(".json"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    insp = inspection(UNCERTAIN)
    rec.observe(insp)
    rec.outcome(answered(insp.event))
    rec.stop()
    assert list((tmp_path / "records").iterdir()) == []
    assert rec.stats().failed == 1


def test_the_sink_publishes_first_then_tells_the_recorder(tmp_path: pathlib.Path) -> None:
    published: list[str] = []

    class Inner:
        def publish_event(self, event: Any) -> int:
            published.append(event.event_id)
            return 1

    rec = recorder(tmp_path)
    sink = EventFanout(Inner(), [RecorderListener(rec)]).escalated  # the escalation thread's sink
    insp = inspection(UNCERTAIN)
    rec.observe(insp)
    assert sink.publish_event(answered(insp.event)) == 1
    rec.stop()
    assert published == [insp.event.event_id] and len(records(tmp_path)) == 1
    # no recorder: just publishes
    assert EventFanout(Inner(), [RecorderListener(None)]).escalated.publish_event(insp.event) == 1


def test_frames_of_a_new_model_are_recorded_once_the_swap_is_done(tmp_path: pathlib.Path) -> None:
    running = [MODEL]
    cfg = DatasetConfig()
    rec = DatasetRecorder(cfg, RecordStore.open(tmp_path, 100, 1 << 30), device="box1", cameras=["belt"],
                          model=lambda: running[0], pending_ttl_s=5.0)
    new = ModelRef("retrained@abcdefabcdef", None, "detect", MODEL.names)
    first, second = (inspection(UNCERTAIN, sequence=s, model_id=new.model_id) for s in (1, 2))
    rec.observe(first)
    rec.outcome(answered(first.event))  # inspected by the new model before the service switched over
    rec.start()
    rec.stop()
    running[0] = new
    rec.start()
    rec.observe(second)
    rec.outcome(answered(second.event))
    rec.stop()
    assert [(d["sequence"], d["model"]["id"]) for d in records(tmp_path)] == [(2, new.model_id)]
    assert rec.stats().dropped["model_changed"] == 1


def test_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DatasetError, match=r"dataset.dir .*file/rec: cannot create or read the record folder"):
        RecordStore.open(tmp_path / "file" / "rec", 10, 1 << 30)
