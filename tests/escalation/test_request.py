"""The Describe request the agent builds: downscaled JPEG, crops around uncertain detections, ids."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from agent.config.models import TriageConfig
from agent.core.detections import Detection
from agent.core.event import TagEvent
from agent.escalation.request import MIN_CROP_SIDE, build_request, crop_region, downscale
from agent.triage.policy import triage, triage_classification

EventFactory = Callable[..., TagEvent]


def frame(width: int = 1280, height: int = 720) -> np.ndarray:
    noise = np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (7, 7), 2)


@pytest.mark.parametrize(
    ("shape", "max_side", "expected"),
    [
        ((720, 1280, 3), 672, (378, 672)),  # 1280x720 -> scale 0.525
        ((1280, 720, 3), 672, (672, 378)),  # portrait: the long side is the height
        ((480, 640, 3), 672, (480, 640)),  # already small: never upscaled
        ((100, 100), 64, (64, 64)),  # grey works too
    ],
)
def test_downscale_keeps_the_aspect(shape: tuple[int, ...], max_side: int, expected: tuple[int, int]) -> None:
    assert downscale(np.zeros(shape, np.uint8), max_side).shape[:2] == expected


@pytest.mark.parametrize(
    ("box", "margin", "expected"),
    [
        ((100, 100, 200, 180), 0.5, (50, 60, 250, 220)),  # 100x80 box grown by 50/40 on each side
        ((100, 100, 110, 105), 0.5, (73, 70, 137, 135)),  # tiny: grown to MIN_CROP_SIDE (64) around its centre
        ((0, 0, 100, 100), 0.5, (0, 0, 150, 150)),  # clipped at the top-left corner
        ((600, 400, 640, 480), 0.0, (588, 400, 640, 480)),  # 40 wide: grown to 64, then clipped at the right
        ((700, 500, 800, 600), 0.5, None),  # outside the 640x480 frame
        ((float("nan"), 0, 10, 10), 0.5, None),  # not finite
    ],
)
def test_crop_region(box: tuple[float, float, float, float], margin: float,
                     expected: tuple[int, int, int, int] | None) -> None:
    assert crop_region(box, margin, 640, 480) == expected
    if expected is not None and expected[0] > 0 and expected[2] < 640:
        assert expected[2] - expected[0] >= MIN_CROP_SIDE


def test_request_carries_a_downscaled_frame_crops_detections_and_ids(event_factory: EventFactory) -> None:
    detections = [
        Detection("dent", 1, 0.42, (300.0, 200.0, 380.0, 260.0)),  # uncertain: cropped
        Detection("stain", 2, 0.3, (900.0, 500.0, 960.0, 560.0)),  # uncertain: cropped
        Detection("scratch", 0, 0.1, (10.0, 10.0, 20.0, 20.0)),  # below reject: dropped by triage
    ]
    decision = triage(detections, TriageConfig())
    event = event_factory(verdict="uncertain", camera="belt", sequence=42)
    req = build_request(frame(), event, decision, template_id="inspect-v1", max_side=672, crop_margin=0.5)
    image = cv2.imdecode(np.frombuffer(req.image, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (378, 672, 3) and req.image[:2] == b"\xff\xd8"
    assert (req.source_width, req.source_height) == (1280, 720)
    assert (req.device_id, req.camera_id, req.frame_sequence, req.event_id) == ("dev1", "belt", 42, event.event_id)
    assert req.template_id == "inspect-v1" and req.prefilter_model == event.model_id
    assert [(d.label, round(d.confidence, 2)) for d in req.detections] == [("dent", 0.42), ("stain", 0.3)]
    assert (req.detections[0].box.x1, req.detections[0].box.y2) == (300.0, 260.0)  # source-frame pixels
    assert [c.label for c in req.crops] == ["dent", "stain"]
    crop = req.crops[0]
    assert (crop.box.x1, crop.box.y1, crop.box.x2, crop.box.y2) == (260, 170, 420, 290)  # 80x60 grown by 40/30
    assert cv2.imdecode(np.frombuffer(crop.image, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)


def test_crops_are_capped_and_only_for_uncertain_boxes(event_factory: EventFactory) -> None:
    detections = [Detection("dent", 1, 0.3 + i / 100, (i * 100.0, 100.0, i * 100.0 + 50, 150.0)) for i in range(6)]
    detections.append(Detection("scratch", 0, 0.95, (600.0, 600.0, 700.0, 700.0)))  # accepted: not cropped
    decision = triage(detections, TriageConfig())
    req = build_request(frame(), event_factory(verdict="uncertain"), decision, template_id="inspect-v1",
                        max_crops=3)
    assert len(req.detections) == 7 and len(req.crops) == 3
    assert [round(c.confidence, 2) for c in req.crops] == [0.35, 0.34, 0.33]  # most confident first
    assert build_request(frame(), event_factory(verdict="uncertain"), decision, template_id="x",
                         max_crops=0).crops == []


def test_classifier_frames_have_detections_without_boxes_and_no_crops(event_factory: EventFactory) -> None:
    decision = triage_classification([("pass", 0.45), ("scratch", 0.4), ("hole", 0.15)], TriageConfig())
    event = dataclasses.replace(event_factory(verdict="uncertain"), decision=decision)
    req = build_request(frame(640, 480), event, decision, template_id="inspect-v1")
    assert [d.label for d in req.detections] == ["scratch"]
    assert not req.detections[0].HasField("box") and list(req.crops) == []
    assert (req.source_width, req.source_height) == (640, 480)
