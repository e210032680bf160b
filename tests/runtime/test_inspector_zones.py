"""Zones in the FrameInspector with the shipped models: a detector's detections outside the inspected area are
dropped and counted, a classifier sees the crop of the inspected area, and the event says so (schema-valid)."""

from __future__ import annotations

import datetime
import json
import pathlib
import time

import numpy as np
import pytest

from agent.capture.synthetic import ConveyorScene
from agent.config.models import AgentConfig, CameraConfig, ModelConfig
from agent.config.zones import ZonesConfig
from agent.core.frame import Frame
from agent.core.inspection import Inspection
from agent.prefilter.factory import open_prefilter
from agent.publish.schema import validate_payload
from agent.publish.snapshot import render_snapshot
from agent.runtime.inspector import FrameInspector
from agent.triage.zones import ZoneMask

MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"
TOP_HALF = {"exclude": [{"name": "top", "points": [[0, 0], [1, 0], [1, 0.5], [0, 0.5]]}]}
LEFT_HALF = {"exclude": [{"name": "left", "points": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}]}


def config(model: str, zones: dict | None) -> AgentConfig:
    cam = CameraConfig(id="belt", source="synthetic://conveyor",
                       zones=None if zones is None else ZonesConfig.model_validate(zones))
    return AgentConfig(device_id="box1", cameras=[cam], model=ModelConfig(path=MODELS / model, intra_op_threads=1))


def frames(seed: int, n: int) -> list[Frame]:
    scene = ConveyorScene(seed=seed)
    out = []
    for sequence in range(1, n + 1):
        image, truth = scene.next_frame()
        out.append(Frame("belt", sequence, datetime.datetime.now(datetime.timezone.utc), time.monotonic(), image,
                         truth))
    return out


def test_a_detector_keeps_only_the_detections_in_the_inspected_area():
    plain_cfg, zoned_cfg = config("conveyor-yolov8n.int8.onnx", None), config("conveyor-yolov8n.int8.onnx", LEFT_HALF)
    model = open_prefilter(plain_cfg.model.path, plain_cfg.model)
    plain, zoned = FrameInspector(plain_cfg, model), FrameInspector(zoned_cfg, model)
    reject = plain_cfg.triage.reject
    dropped_total = 0
    for frame in frames(seed=13, n=40):
        result = model.infer(frame.image)  # the same result through both inspectors
        a, b = plain.inspections([frame], [result])[0], zoned.inspections([frame], [result])[0]
        left = [t for t in a.decision.tags if (t.detection.box[0] + t.detection.box[2]) / 2 < 320]
        assert all((t.detection.box[0] + t.detection.box[2]) / 2 >= 320 for t in b.decision.tags)
        assert len(b.decision.tags) == len(a.decision.tags) - len(left)
        payload = json.loads(b.event.to_json())
        assert validate_payload(payload) == [], payload
        assert payload["zones"] == {"applied": True, "include": [], "exclude": ["left"], "rule": "centre",
                                    "dropped": len(left)}
        assert len(left) == sum(1 for d in result.detections if d.confidence >= reject
                               and (d.box[0] + d.box[2]) / 2 < 320)
        assert "zones" not in a.event.to_payload()  # no zones, no field
        dropped_total += len(left)
        assert b.zones is not None and b.zones.exclude[0].points[2] == (320.0, 480.0)
    assert dropped_total >= 5  # parts ride left to right: their defects are seen in both halves


def test_a_classifier_sees_the_crop_of_the_inspected_area():
    zones = {"include": [{"name": "lane", "points": [[0.25, 0.0], [0.75, 0.0], [0.75, 1.0], [0.25, 1.0]]}],
             "exclude": [{"name": "lamp", "points": [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]}],
             "allow_overlap": True}  # a hole in the lane
    cfg = config("conveyor-resnet-cls.int8.onnx", zones)
    model = open_prefilter(cfg.model.path, cfg.model)
    inspector = FrameInspector(cfg, model)
    differs = 0
    for frame in frames(seed=5, n=12):
        seen = inspector.model_input(frame)
        mask = ZoneMask(cfg.cameras[0].zones.resolve(640, 480))  # type: ignore[union-attr]
        assert seen.shape == (480, 320, 3) and np.array_equal(seen, mask.crop(frame.image))
        ins = inspector.inspect(frame)
        assert ins.result.probabilities == model.infer(seen).probabilities
        differs += ins.result.probabilities != model.infer(frame.image).probabilities
        payload = json.loads(ins.event.to_json())
        assert validate_payload(payload) == [], payload
        assert payload["zones"]["crop"] == [160, 0, 480, 480] and payload["zones"]["include"] == ["lane"]
    assert differs == 12  # it really saw something else than the whole frame


def test_zones_are_drawn_on_the_snapshot():
    frame = frames(seed=3, n=1)[0]
    cfg = config("conveyor-yolov8n.int8.onnx", TOP_HALF)
    model = open_prefilter(cfg.model.path, cfg.model)
    ins = FrameInspector(cfg, model).inspect(frame)
    plain = render_snapshot(frame.image, ins.decision, max_width=640, quality=95, max_bytes=10**6)
    drawn = render_snapshot(frame.image, ins.decision, max_width=640, quality=95, max_bytes=10**6, zones=ins.zones)
    assert plain is not None and drawn is not None
    import cv2
    a = cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_COLOR).astype(np.float64)
    b = cv2.imdecode(np.frombuffer(drawn, np.uint8), cv2.IMREAD_COLOR).astype(np.float64)
    grey = np.full(3, 128.0)
    # the excluded top half is pulled towards grey, the bottom half (no tag boxes drawn there) is untouched
    assert np.abs(b[20:220] - grey).mean() < 0.75 * np.abs(a[20:220] - grey).mean()
    assert np.abs(b[300:460] - a[300:460]).mean() < np.abs(b[20:220] - a[20:220]).mean()


@pytest.mark.parametrize("size", [(640, 480), (1920, 1080)])
def test_masks_are_built_quickly_enough_for_a_first_frame(size):
    cfg = ZonesConfig.model_validate({"include": [{"name": "all", "points": [[0, 0], [1, 0], [1, 1], [0, 1]]}],
                                      "exclude": TOP_HALF["exclude"], "allow_overlap": True})
    mask = ZoneMask(cfg.resolve(*size))
    assert mask.area == size[0] * size[1] // 2


def test_an_anomaly_model_sees_the_crop_and_its_regions_come_back_in_frame_pixels(tmp_path):
    from tests.prefilter.onnx_builders import brightness_anomaly_model
    model_path = brightness_anomaly_model(tmp_path / "bright.onnx", 96, 64, metadata={"threshold": "0.45"})
    zones = ZonesConfig.model_validate({"include": [{"name": "right", "points": [[0.5, 0], [1, 0], [1, 1], [0.5, 1]]}]})
    cam = CameraConfig(id="belt", source="synthetic://conveyor", zones=zones)
    cfg = AgentConfig(device_id="box1", cameras=[cam], model=ModelConfig(path=model_path, intra_op_threads=1))
    model = open_prefilter(cfg.model.path, cfg.model)
    image = np.zeros((480, 640, 3), np.uint8)
    image[300:340, 400:440] = 255  # a bright square in the inspected right half ...
    image[100:140, 60:100] = 255  # ... and one in the left half, outside the crop
    frame = Frame("belt", 1, datetime.datetime.now(datetime.timezone.utc), time.monotonic(), image)
    ins = FrameInspector(cfg, model).inspect(frame)
    boxes = [t.detection.box for t in ins.decision.tags if t.detection.box is not None]
    assert ins.decision.verdict == "defect" and len(boxes) == 1, ins.decision
    x1, y1, x2, y2 = boxes[0]
    # the crop is x 320..640; the map's cells are 10 x 20 frame pixels there, so the box is found to a cell
    assert 390 <= x1 <= 400 and 430 <= x2 <= 450 and 280 <= y1 <= 300 and 340 <= y2 <= 360, boxes[0]
    assert json.loads(ins.event.to_json())["zones"]["crop"] == [320, 0, 640, 480]


class RecordingEscalation:
    """Stands where the Escalator does (agent.core.ports.Escalation): keeps what the VLM would be sent."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def submit(self, frame: Frame, decision, event) -> None:  # type: ignore[no-untyped-def]
        self.frames.append(frame)


class ListSink:
    def publish_event(self, event) -> int:  # type: ignore[no-untyped-def]
        return 1


def test_the_vlm_is_sent_the_frame_with_the_ignored_zones_blanked():
    from agent.capture.grabber import Grabber
    from agent.config.models import TriageConfig
    from agent.runtime.loop import InferenceLoop
    edges = {"exclude": [{"name": "top-edge", "points": [[0, 0], [1, 0], [1, 0.055], [0, 0.055]]},
                         {"name": "bottom-edge", "points": [[0, 0.945], [1, 0.945], [1, 1], [0, 1]]}]}
    cam = CameraConfig(id="belt", source="synthetic://conveyor?seed=2&fps=0&frames=20&edge_marks=1",
                       zones=ZonesConfig.model_validate(edges), triage=TriageConfig(accept=1.0, reject=0.05))
    cfg = AgentConfig(device_id="box1", cameras=[cam], model=ModelConfig(intra_op_threads=1))
    inspector = FrameInspector(cfg, open_prefilter(cfg.model.path, cfg.model))
    grabber, escalation, seen = Grabber(cam), RecordingEscalation(), list[Inspection]()
    loop = InferenceLoop(inspector, [("belt", grabber)], ListSink(), on_inspection=seen.append, escalation=escalation)
    grabber.start()
    loop.start()
    assert loop.join(60.0) and loop.error is None
    assert len(escalation.frames) >= 5  # every detection is uncertain: frames with one go to the VLM
    by_sequence = {i.frame.sequence: i.frame for i in seen}
    for sent in escalation.frames:
        original = by_sequence[sent.sequence]
        assert original.truth is not None and original.truth.decoys  # the marks were in the camera's frame ...
        for band in (sent.image[:26], sent.image[-26:]):  # ... but the VLM gets flat edges
            assert (band == band[0, 0]).all()
        assert np.array_equal(sent.image[27:453], original.image[27:453])  # the inspected area untouched
