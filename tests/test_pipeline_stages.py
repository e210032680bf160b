"""The inference loop's three threads (take and prepare, model, publish) with the shipped detector and real
synthetic cameras: the same inspections as one call per frame, each stage on its own thread, input buffers
reused, every frame taken published when stopping, a model error ends the loop."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from agent.capture.grabber import Grabber
from agent.config.models import DEFAULT_PREFILTER, AgentConfig, CameraConfig, ModelConfig
from agent.pipeline import FrameInspector, InferenceLoop, Inspection
from agent.prefilter.detector import YoloDetector
from agent.prefilter.factory import open_prefilter
from agent.publish.event import TagEvent


class ListSink:
    def __init__(self) -> None:
        self.events: list[TagEvent] = []

    def publish_event(self, event: TagEvent) -> int:
        self.events.append(event)
        return len(self.events)


class StageSpy:
    """The shipped detector, noting which thread runs each stage and how many input buffers were made."""

    def __init__(self, inner: YoloDetector, fail_forward_after: int | None = None) -> None:
        self.inner = inner
        self.max_batch = inner.max_batch
        self.threads: dict[str, set[str]] = {"prepare": set(), "forward": set(), "finish": set()}
        self.inputs_made = 0
        self.forwards = 0
        self.fail_forward_after = fail_forward_after

    def _note(self, stage: str) -> None:
        self.threads[stage].add(threading.current_thread().name)

    def infer(self, image: np.ndarray) -> Any:
        return self.inner.infer(image)

    def new_input(self) -> Any:
        self.inputs_made += 1
        return self.inner.new_input()

    def prepare(self, images: Any, buffer: Any) -> Any:
        self._note("prepare")
        return self.inner.prepare(images, buffer)

    def forward(self, tensor: np.ndarray) -> np.ndarray:
        self._note("forward")
        self.forwards += 1
        if self.fail_forward_after is not None and self.forwards > self.fail_forward_after:
            raise RuntimeError("the model broke")
        return self.inner.forward(tensor)

    def finish(self, output: np.ndarray, plans: Any, spent_ms: float) -> Any:
        self._note("finish")
        return self.inner.finish(output, plans, spent_ms)


def setup(cameras: int, frames: int, spy: StageSpy) -> tuple[InferenceLoop, list[Grabber], ListSink, list[Inspection]]:
    cams = [CameraConfig(id=f"cam{i}", source=f"synthetic://conveyor?seed={i + 1}&fps=0"
                         + (f"&frames={frames}" if frames else "")) for i in range(cameras)]
    config = AgentConfig(device_id="box", cameras=cams)
    grabbers = [Grabber(c) for c in cams]
    sink, seen = ListSink(), []
    loop = InferenceLoop(FrameInspector(config, spy), [(g.camera.id, g) for g in grabbers], sink,
                         on_inspection=seen.append)
    return loop, grabbers, sink, seen


@pytest.fixture(scope="module")
def detector() -> YoloDetector:
    model = open_prefilter(DEFAULT_PREFILTER, ModelConfig(max_batch=2))
    assert isinstance(model, YoloDetector)
    return model


def test_three_threads_give_the_inspections_of_one_call_per_frame(detector: YoloDetector) -> None:
    spy = StageSpy(detector)
    loop, grabbers, sink, seen = setup(3, 12, spy)
    for g in grabbers:
        g.start()
    loop.start()
    assert loop.join(60.0), "the loop did not end after every source ended"
    assert loop.error is None
    assert len(sink.events) == 36 and len(seen) == 36
    for cam in ("cam0", "cam1", "cam2"):
        assert [i.frame.sequence for i in seen if i.frame.camera_id == cam] == list(range(1, 13))  # in order
    one_call = FrameInspector(AgentConfig(device_id="box", cameras=[CameraConfig(id=f"cam{i}", source="x")
                                                                    for i in range(3)]), detector)
    assert [one_call.inspect(i.frame).result.detections for i in seen] == [i.result.detections for i in seen]
    assert sum(len(i.result.detections) for i in seen) > 0  # defects were found: the comparison means something
    assert spy.threads == {"prepare": {"inference-prepare"}, "forward": {"inference"}, "finish": {"inference-publish"}}
    assert spy.inputs_made == 2  # two preallocated inputs, reused for every frame
    assert spy.forwards < 36  # frames of several cameras went through the model together
    assert all(i.result.latency_ms > 0 for i in seen)
    assert loop.finished


def test_stopping_publishes_every_frame_taken(detector: YoloDetector) -> None:
    spy = StageSpy(detector)
    loop, grabbers, sink, _seen = setup(2, 0, spy)  # 0: endless cameras
    for g in grabbers:
        g.start()
    loop.start()
    deadline = time.monotonic() + 30.0
    while len(sink.events) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    for g in grabbers:  # as the service does: cameras first, then the loop
        g.stop()
    loop.stop(timeout=10.0)
    assert loop.finished and loop.error is None
    assert len(sink.events) == sum(g.stats().delivered for g in grabbers) >= 10


def test_a_model_error_ends_every_stage_and_is_recorded(detector: YoloDetector) -> None:
    spy = StageSpy(detector, fail_forward_after=3)
    loop, grabbers, sink, _seen = setup(1, 0, spy)
    for g in grabbers:
        g.start()
    loop.start()
    try:
        assert loop.join(30.0), "the loop went on after the model failed"
    finally:
        for g in grabbers:
            g.stop()
    assert isinstance(loop.error, RuntimeError) and "the model broke" in str(loop.error)
    assert len(sink.events) == 3  # the frames before the failure were published


def test_a_prefilter_without_stages_is_called_whole_on_the_model_thread(detector: YoloDetector) -> None:
    class WholeCalls:
        def __init__(self) -> None:
            self.threads: set[str] = set()

        def infer(self, image: np.ndarray) -> Any:
            self.threads.add(threading.current_thread().name)
            return detector.infer(image)

    whole = WholeCalls()
    cams = [CameraConfig(id="cam0", source="synthetic://conveyor?seed=1&fps=0&frames=5")]
    grabber = Grabber(cams[0])
    sink = ListSink()
    loop = InferenceLoop(FrameInspector(AgentConfig(device_id="box", cameras=cams), whole), [("cam0", grabber)], sink)
    grabber.start()
    loop.start()
    assert loop.join(30.0) and loop.error is None
    assert [e.sequence for e in sink.events] == [1, 2, 3, 4, 5]
    assert whole.threads == {"inference"}
