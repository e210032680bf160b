"""Builders for the dataset tests: inspections as the inference thread makes them, the VLM's answer merged
as the escalation thread publishes it, and recordings written through the real store."""

from __future__ import annotations

import datetime
import json
import pathlib
from collections.abc import Sequence

import cv2
import numpy as np

from agent.config.models import TriageConfig
from agent.core.detections import Detection, PrefilterResult
from agent.core.event import EscalationOutcome, TagEvent, VlmDefect, build_event
from agent.core.frame import Frame
from agent.core.inspection import Inspection
from agent.dataset.record import DatasetRecord
from agent.dataset.recorder import ModelRef, build_record
from agent.dataset.store import RecordStore
from agent.escalation.merge import VlmAnswer, merge
from agent.triage.policy import decide

NAMES = ("scratch", "hole", "stain", "missing")
MODEL = ModelRef("conveyor-test@0123456789ab", "0123456789ab" + "0" * 52, "detect", NAMES)
T0 = datetime.datetime(2026, 11, 29, 1, 0, 0, tzinfo=datetime.timezone.utc)
SIZE = (160, 120)  # width, height


def det(label: str, confidence: float, box: tuple[float, float, float, float] = (10, 10, 50, 40)) -> Detection:
    return Detection(label, NAMES.index(label), confidence, box)


def inspection(detections: Sequence[Detection] = (), *, camera: str = "belt", sequence: int = 1,
               seconds: float = 0.0, model_id: str = MODEL.model_id) -> Inspection:
    """One frame, its prefilter result with ``detections``, the default triage (accept 0.6, reject 0.25)."""
    rng = np.random.default_rng(sequence)
    image = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    captured = T0 + datetime.timedelta(seconds=seconds)
    frame = Frame(camera, sequence, captured, 0.0, image)
    result = PrefilterResult(model_id, tuple(detections), 3.0)
    decision = decide(result, TriageConfig())
    event = build_event(device="box1", camera=camera, sequence=sequence, captured_at=captured,
                        frame_width=SIZE[0], frame_height=SIZE[1], decision=decision, model_id=model_id,
                        prefilter_latency_ms=3.0)
    return Inspection(frame, result, decision, event)


def answered(event: TagEvent, verdict: str = "defect", classes: Sequence[str] = ("scratch",), *,
             revision: int = 1) -> TagEvent:
    """``event`` as the escalation thread publishes it with the VLM's answer."""
    answer = VlmAnswer(verdict=verdict, tags=tuple((c, 0.9 - 0.1 * i) for i, c in enumerate(classes)),  # type: ignore[arg-type]
                       defects=tuple(VlmDefect(c, "on the part", "medium") for c in classes),
                       description="described", model="llava:7b", vlm_ms=5.0, gateway_ms=6.0)
    return merge(event, EscalationOutcome("answered", model="llava:7b", latency_ms=7.0, description="described"),
                 answer, revision=revision)


def without_answer(event: TagEvent, status: str) -> TagEvent:
    return merge(event, EscalationOutcome(status, reason="test"), None)  # type: ignore[arg-type]


def write_recording(root: pathlib.Path, items: Sequence[tuple[Inspection, TagEvent | None]],
                    model: ModelRef = MODEL) -> list[DatasetRecord]:
    """Records written through the real store: (inspection, answered event) -> escalated;
    (inspection, None) -> confident sample."""
    store = RecordStore.open(root, 100_000, 1 << 40)
    out = []
    for insp, event in items:
        record = build_record(insp, "escalated" if event is not None else "confident_sample", event or insp.event,
                              model, "box1")
        ok, jpeg = cv2.imencode(".jpg", insp.frame.image)
        assert ok
        store.add(record.id, jpeg.tobytes(), json.dumps(record.to_dict()).encode())
        out.append(record)
    return out
