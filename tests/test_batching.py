"""Frames from several cameras in one prefilter call (model.max_batch): same results as one call each."""

from __future__ import annotations

import datetime
import time

import numpy as np

from agent.config.models import DEFAULT_PREFILTER, AgentConfig, CameraConfig, ModelConfig
from agent.core.frame import Frame
from agent.prefilter.detector import YoloDetector
from agent.prefilter.factory import open_prefilter
from agent.runtime.inspector import FrameInspector
from agent.tooling.quantize.calibration import synthetic


def _boxes(result: object) -> list[tuple[str, float, tuple[float, ...]]]:
    return [(d.label, round(d.confidence, 4), tuple(round(v, 1) for v in d.box or ()))
            for d in result.detections]  # type: ignore[attr-defined]


def test_a_batch_gives_each_frame_what_one_call_gives_it() -> None:
    frames = list(synthetic(7, 11).frames())
    batched = open_prefilter(DEFAULT_PREFILTER, ModelConfig(max_batch=3))
    assert isinstance(batched, YoloDetector) and batched.max_batch == 3
    alone = [batched.infer(f) for f in frames]
    together = batched.infer_batch(frames)  # 3 + 3 + 1
    assert [_boxes(r) for r in together] == [_boxes(r) for r in alone]
    assert sum(len(r.detections) for r in alone) > 0  # the frames show defects: the comparison means something
    assert len({r.latency_ms for r in together[:3]}) == 1  # a frame waited for its whole batch


def test_max_batch_1_is_one_call_per_frame_and_the_default_is_4() -> None:
    model = open_prefilter(DEFAULT_PREFILTER, ModelConfig(max_batch=1))
    assert isinstance(model, YoloDetector) and model.max_batch == 1
    assert list(model.session.get_inputs()[0].shape) == [1, 3, 320, 320]  # the file's own batch of 1
    default = open_prefilter(DEFAULT_PREFILTER)
    assert isinstance(default, YoloDetector) and default.max_batch == 4
    classifier = open_prefilter(DEFAULT_PREFILTER.with_name("conveyor-resnet-cls.int8.onnx"))
    assert not hasattr(classifier, "infer_batch")  # classifiers take one frame a call


class CountingPrefilter:
    """The shipped detector, counting the calls the inspector makes."""

    def __init__(self, inner: YoloDetector) -> None:
        self.inner, self.max_batch, self.calls = inner, inner.max_batch, []

    def infer(self, image: np.ndarray) -> object:
        self.calls.append(1)
        return self.inner.infer(image)

    def infer_batch(self, images: list[np.ndarray]) -> list[object]:
        self.calls.append(len(images))
        return self.inner.infer_batch(images)  # type: ignore[return-value]


def test_the_inspector_sends_the_frames_of_several_cameras_in_one_call() -> None:
    cams = [CameraConfig(id=f"cam{i}", source="synthetic://conveyor") for i in range(3)]
    config = AgentConfig(cameras=cams, model=ModelConfig(max_batch=4))
    inner = open_prefilter(DEFAULT_PREFILTER, config.model)
    assert isinstance(inner, YoloDetector)
    prefilter = CountingPrefilter(inner)
    inspector = FrameInspector(config, prefilter)  # type: ignore[arg-type]
    now = datetime.datetime.now(datetime.timezone.utc)
    frames = [Frame(f"cam{i}", 1, now, time.monotonic(), image)
              for i, image in enumerate(synthetic(3, 4).frames())]
    inspections = inspector.inspect_many(frames)
    assert prefilter.calls == [3]
    assert [i.event.camera for i in inspections] == ["cam0", "cam1", "cam2"]
    one_by_one = [inspector.inspect(f) for f in frames]
    assert [i.event.verdict for i in inspections] == [i.event.verdict for i in one_by_one]
    assert [_boxes(i.result) for i in inspections] == [_boxes(i.result) for i in one_by_one]
