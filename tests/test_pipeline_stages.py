"""The inference loop's three threads (take and prepare, model, publish) with the shipped detector and real
synthetic cameras: the same inspections as one call per frame, each stage on its own thread, input buffers
reused, every frame taken published when stopping, a model error ends the loop."""

from __future__ import annotations

import collections
import datetime
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from agent.capture.grabber import Grabber
from agent.config.escalation import EscalationConfig
from agent.config.models import DEFAULT_PREFILTER, AgentConfig, CameraConfig, LearnConfig, ModelConfig
from agent.core.event import TagEvent
from agent.core.frame import Frame
from agent.core.inspection import Inspection
from agent.prefilter.detector import YoloDetector
from agent.prefilter.factory import open_prefilter
from agent.runtime.inspector import FrameInspector
from agent.runtime.loop import InferenceLoop


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
        self.mixed = 0
        self.heights: list[int] = []  # of the frames prepared
        self.sources: list[Any] = []  # the camera of each frame prepared
        self.fail_forward_after = fail_forward_after

    def _note(self, stage: str) -> None:
        self.threads[stage].add(threading.current_thread().name)

    def infer(self, image: np.ndarray) -> Any:
        return self.inner.infer(image)

    def new_input(self) -> Any:
        self.inputs_made += 1
        return self.inner.new_input()

    def prepare(self, images: Any, buffer: Any, sources: Any = None) -> Any:
        self._note("prepare")
        self.heights += [image.shape[0] for image in images]
        self.sources += list(sources or [])
        return self.inner.prepare(images, buffer, sources)

    def forward(self, tensor: Any) -> Any:
        self._note("forward")
        self.forwards += 1
        self.mixed += isinstance(tensor, tuple)  # frames of several input sizes (model.input_size auto)
        if self.fail_forward_after is not None and self.forwards > self.fail_forward_after:
            raise RuntimeError("the model broke")
        return self.inner.forward(tensor)

    def finish(self, output: Any, plans: Any, spent_ms: float) -> Any:
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



def _start_together(grabbers: Sequence[Grabber], loop: InferenceLoop) -> None:
    """Start the cameras, wait until each has a frame or two ready, then the loop: its first take is a batch
    however slowly a busy machine renders the synthetic frames."""
    for g in grabbers:
        g.start()
    deadline = time.monotonic() + 30.0
    while not all(g.stats().frames_read >= 2 for g in grabbers) and time.monotonic() < deadline:
        time.sleep(0.01)
    loop.start()

def test_three_threads_give_the_inspections_of_one_call_per_frame(detector: YoloDetector) -> None:
    spy = StageSpy(detector)
    loop, grabbers, sink, seen = setup(3, 12, spy)
    _start_together(grabbers, loop)
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
    assert sorted(spy.sources) == sorted(f"cam{i}" for i in range(3) for _ in range(12))  # each frame's camera
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


class ConcurrentSpy(StageSpy):
    """The shipped detector with ``concurrent_runs`` model calls allowed at once; each forward call can be
    held up (``delays``, by call number) so that a later batch leaves the model before an earlier one."""

    def __init__(self, inner: YoloDetector, runs: int, delays: dict[int, float] | None = None,
                 fail_forward_after: int | None = None) -> None:
        super().__init__(inner, fail_forward_after)
        self.concurrent_runs = runs
        self.delays = delays or {}
        self._lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.finished_order: list[int] = []

    def forward(self, tensor: Any) -> Any:
        self._note("forward")
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.forwards += 1
            call = self.forwards
        try:
            time.sleep(self.delays.get(call, 0.0))
            if self.fail_forward_after is not None and call > self.fail_forward_after:
                raise RuntimeError("the model broke")
            return self.inner.forward(tensor)
        finally:
            with self._lock:
                self.running -= 1
                self.finished_order.append(call)


def test_two_concurrent_runs_use_two_model_threads_and_keep_every_camera_in_order(detector: YoloDetector) -> None:
    spy = ConcurrentSpy(detector, runs=2, delays={n: 0.03 for n in range(1, 40, 2)})  # odd calls are slow
    loop, grabbers, sink, seen = setup(3, 12, spy)
    for g in grabbers:
        g.start()
    loop.start()
    assert loop.join(60.0) and loop.error is None
    assert loop.model_threads == 2
    assert spy.threads["forward"] == {"inference", "inference-2"}
    assert spy.most_running == 2  # two batches were in the model at once
    assert spy.finished_order != sorted(spy.finished_order)  # and a later one left the model first
    assert spy.inputs_made == 3  # one input more than runs: the next frames are prepared meanwhile
    assert len(sink.events) == 36
    for cam in ("cam0", "cam1", "cam2"):
        assert [e.sequence for e in sink.events if e.camera == cam] == list(range(1, 13))
    assert [i.event for i in seen] == sink.events  # published in the order the frames were taken
    one_call = FrameInspector(AgentConfig(device_id="box", cameras=[CameraConfig(id=f"cam{i}", source="x")
                                                                    for i in range(3)]), detector)
    assert [one_call.inspect(i.frame).result.detections for i in seen] == [i.result.detections for i in seen]


def test_a_prefilter_allowing_one_run_is_never_run_twice_at_once_even_with_two_model_threads(
        detector: YoloDetector) -> None:
    two = ConcurrentSpy(detector, runs=2)
    one = ConcurrentSpy(detector, runs=1, delays={n: 0.005 for n in range(200)})
    cams = [CameraConfig(id=f"cam{i}", source=f"synthetic://conveyor?seed={i + 1}&fps=0") for i in range(2)]
    config = AgentConfig(device_id="box", cameras=cams)
    grabbers = [Grabber(c) for c in cams]
    sink = ListSink()
    loop = InferenceLoop(FrameInspector(config, two), [(g.camera.id, g) for g in grabbers], sink)
    for g in grabbers:
        g.start()
    loop.start()
    try:
        deadline = time.monotonic() + 30.0
        while len(sink.events) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        # a reload to a model that runs one call at a time (e.g. the native TensorRT runtime)
        assert loop.reconfigure(FrameInspector(config, one), [(g.camera.id, g) for g in grabbers], None)
        while one.forwards < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        for g in grabbers:
            g.stop()
        loop.stop(timeout=10.0)
    assert loop.finished and loop.error is None
    assert loop.model_threads == 2 and one.forwards >= 20
    assert one.most_running == 1
    assert one.inputs_made == 2
    for cam in ("cam0", "cam1"):
        sequences = [e.sequence for e in sink.events if e.camera == cam]
        assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


@pytest.mark.parametrize(("runs", "published"), [(1, {3}), (2, {3, 4})])
def test_a_model_error_ends_every_stage_and_keeps_what_came_before_in_order(
        detector: YoloDetector, runs: int, published: set[int]) -> None:
    spy = ConcurrentSpy(detector, runs=runs, fail_forward_after=3)
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
    sequences = [e.sequence for e in sink.events]
    # everything taken before the failed run, nothing after it; with two runs the one that failed may have
    # been the 4th or the 5th batch, as two threads race to the model
    assert sequences == list(range(1, len(sequences) + 1)) and len(sequences) in published


@pytest.mark.parametrize("staged", [True, False])
def test_a_learning_camera_beside_an_inspecting_one(detector: YoloDetector, staged: bool) -> None:
    """One camera learns (no prefilter: a sample of its frames for the VLM), the other is inspected by the model,
    in the same batches: the model sees only the inspecting camera's frames; the learning camera's frames are
    each counted by fate, and only the sampled ones published (here without a gateway: ``unavailable``)."""

    class WholeCalls:  # the detector called whole, one frame at a time: no stages
        def __init__(self) -> None:
            self.heights: list[int] = []

        def infer(self, image: np.ndarray) -> Any:
            self.heights.append(image.shape[0])
            return detector.infer(image)

    spy: Any = StageSpy(detector) if staged else WholeCalls()
    cams = [CameraConfig(id="learn", source="synthetic://surface?seed=1&fps=0&frames=12", mode="learn"),
            CameraConfig(id="belt", source="synthetic://conveyor?seed=1&fps=0&frames=12")]
    # no schedule after the first frame; 2 scene changes at once, then one a minute: 3 sampled of 12 frames
    config = AgentConfig(device_id="box", cameras=cams, escalation=EscalationConfig(gateway="127.0.0.1:50061"),
                         learn=LearnConfig(sample_per_minute=0, scene_changes_per_minute=1, scene_change_burst=2))
    grabbers = [Grabber(c) for c in cams]
    sink, seen = ListSink(), list[Inspection]()
    inspector = FrameInspector(config, spy)
    loop = InferenceLoop(inspector, [(g.camera.id, g) for g in grabbers], sink, on_inspection=seen.append)
    for g in grabbers:
        g.start()
    loop.start()
    assert loop.join(60.0) and loop.error is None
    belt = [e for e in sink.events if e.camera == "belt"]
    learned = [e for e in sink.events if e.camera == "learn"]
    assert [e.sequence for e in belt] == list(range(1, 13)) and loop.counters.inspected == {"belt": 12}
    assert inspector.tally.snapshot() == {"learn": {"sampled_schedule": 1, "sampled_scene_change": 2,
                                                    "skipped_rate": 9, "skipped_unchanged": 0}}
    assert [e.sequence for e in learned] == [1, 2, 3]  # only the sampled frames are published
    for event in learned:
        assert (event.verdict, event.model_id, event.escalation.status) == ("uncertain", "none:learn-mode",
                                                                            "unavailable")
        assert event.decision.tags == ()
    assert len(seen) == 15
    assert spy.heights == [480] * 12  # the model saw the conveyor's 640x480 frames only, never the 640x640 surface


class BatchListSink(ListSink):
    """A sink that takes several events in one call, as ReliablePublisher does (one outbox transaction)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def publish_event(self, event: TagEvent) -> int:
        self.calls.append(1)
        return super().publish_event(event)

    def publish_events(self, events: Sequence[TagEvent]) -> list[int]:
        self.calls.append(len(events))
        return [super(BatchListSink, self).publish_event(event) for event in events]


def test_the_decided_events_of_one_model_batch_go_to_the_sink_in_one_call(detector: YoloDetector) -> None:
    spy = StageSpy(detector)
    cams = [CameraConfig(id=f"cam{i}", source=f"synthetic://conveyor?seed={i + 1}&fps=0&frames=8") for i in range(2)]
    grabbers = [Grabber(c) for c in cams]
    sink, seen = BatchListSink(), list[Inspection]()
    loop = InferenceLoop(FrameInspector(AgentConfig(device_id="box", cameras=cams), spy),
                         [(g.camera.id, g) for g in grabbers], sink, on_inspection=seen.append)
    _start_together(grabbers, loop)
    assert loop.join(60.0) and loop.error is None
    assert len(sink.events) == 16 and sum(sink.calls) == 16
    assert spy.forwards == len(sink.calls) < 16  # one call per model batch, and batches of two cameras came
    assert [i.event for i in seen] == sink.events  # on_inspection hears of each after it was published, in order
    for cam in ("cam0", "cam1"):
        assert [e.sequence for e in sink.events if e.camera == cam] == list(range(1, 9))


def test_frames_of_three_sizes_in_one_batch_each_run_at_their_own_input_size() -> None:
    """model.input_size auto: 4:3, 16:9 and square cameras taken together; each frame runs at the size its
    shape fits (256x320, 192x320, 320x320), every frame is inspected, in order, as one call per frame gives."""
    detector = open_prefilter(DEFAULT_PREFILTER, ModelConfig(max_batch=3, input_size="auto"))
    assert isinstance(detector, YoloDetector) and detector.sizes is not None
    spy = StageSpy(detector)
    sizes = ((640, 480), (1280, 720), (480, 480))
    cams = [CameraConfig(id=f"cam{i}",
                         source=f"synthetic://conveyor?seed={i + 1}&fps=0&frames=12&width={w}&height={h}")
            for i, (w, h) in enumerate(sizes)]
    config = AgentConfig(device_id="box", cameras=cams)
    grabbers = [Grabber(c) for c in cams]
    sink, seen = ListSink(), []
    loop = InferenceLoop(FrameInspector(config, spy), [(g.camera.id, g) for g in grabbers], sink,
                         on_inspection=seen.append)
    _start_together(grabbers, loop)
    assert loop.join(60.0) and loop.error is None
    assert len(sink.events) == 36
    for cam in ("cam0", "cam1", "cam2"):
        assert [i.frame.sequence for i in seen if i.frame.camera_id == cam] == list(range(1, 13))  # in order
    assert sorted(detector.sizes.sizes) == [(192, 320), (256, 320)]
    assert spy.forwards < 36 and spy.mixed > 0  # frames of several sizes went through the model together
    one_call = FrameInspector(config, detector)
    assert [one_call.inspect(i.frame).result.detections for i in seen] == [i.result.detections for i in seen]
    assert sum(len(i.result.detections) for i in seen) > 0


class ReconnectingCamera:
    """A camera's frames, as the loop takes them from a grabber, from a list (their size may change midway: a
    reconnect at another resolution)."""

    def __init__(self, camera: str, images: Sequence[np.ndarray]) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        self._frames = collections.deque(Frame(camera, i + 1, now, time.monotonic(), image)
                                         for i, image in enumerate(images))

    def take(self, timeout: float) -> Frame | None:
        return self._frames.popleft() if self._frames else None

    @property
    def ended(self) -> bool:
        return not self._frames


def test_cameras_whose_frames_change_size_mid_stream_move_to_the_new_size_and_the_old_one_is_closed() -> None:
    """model.input_size auto: two cameras send 1280x960 frames, then (one sooner than the other) 1920x1080; every
    frame is inspected in order as one call per frame gives, the square session is gone, and so is 256x320 once
    no camera's frames run at it: only 192x320 is left open."""
    import cv2

    detector = open_prefilter(DEFAULT_PREFILTER, ModelConfig(max_batch=2, input_size="auto", min_score=0.25))
    assert isinstance(detector, YoloDetector) and detector.sizes is not None
    detector.infer(np.zeros((320, 320, 3), np.uint8))  # the warm-up, as the service runs it
    golden = [cv2.imread(str(DEFAULT_PREFILTER.parent.parent / "tests" / "data" / "golden" / f"img{i:02d}.jpg"))
              for i in (6, 10, 11, 18)]
    small, large = [cv2.resize(g, (1280, 960)) for g in golden], [cv2.resize(g, (1920, 1080)) for g in golden]
    feeds = {"cam0": small[:2] + large, "cam1": small + large[:2]}  # cam0 reconnects after 2 frames, cam1 after 4
    spy = StageSpy(detector)
    config = AgentConfig(device_id="box", cameras=[CameraConfig(id=c, source="x") for c in feeds])
    sink, seen = ListSink(), list[Inspection]()
    loop = InferenceLoop(FrameInspector(config, spy), [(c, ReconnectingCamera(c, f)) for c, f in feeds.items()],
                         sink, on_inspection=seen.append)
    loop.start()
    assert loop.join(60.0) and loop.error is None
    for cam, images in feeds.items():
        assert [i.frame.sequence for i in seen if i.frame.camera_id == cam] == list(range(1, len(images) + 1))
    assert len(sink.events) == 12 and spy.mixed > 0  # batches held frames of both sizes while cam1 lagged
    assert detector.sizes.open_sizes == [(192, 320)]  # the square and the 256x320 sessions are closed
    reference = open_prefilter(DEFAULT_PREFILTER, ModelConfig(max_batch=1, input_size="auto", min_score=0.25))
    assert [reference.infer(i.frame.image).detections for i in seen] == [i.result.detections for i in seen]
    assert sum(len(i.result.detections) for i in seen) > 0


def test_a_reload_that_removes_a_camera_closes_the_input_size_only_it_used() -> None:
    import cv2

    detector = open_prefilter(DEFAULT_PREFILTER, ModelConfig(max_batch=2, input_size="auto"))
    assert isinstance(detector, YoloDetector) and detector.sizes is not None
    image = cv2.imread(str(DEFAULT_PREFILTER.parent.parent / "tests" / "data" / "golden" / "img06.jpg"))
    frames = {"cam0": cv2.resize(image, (1280, 960)), "cam1": cv2.resize(image, (1920, 1080))}
    config = AgentConfig(device_id="box", cameras=[CameraConfig(id=c, source="x") for c in frames])
    queues = [(c, ReconnectingCamera(c, [f])) for c, f in frames.items()]
    loop = InferenceLoop(FrameInspector(config, detector), queues, ListSink())
    loop.start()
    assert loop.join(60.0) and loop.error is None
    assert sorted(detector.sizes.open_sizes) == [(192, 320), (256, 320)]
    kept = AgentConfig(device_id="box", cameras=[CameraConfig(id="cam0", source="x")])
    assert loop.reconfigure(FrameInspector(kept, detector), queues[:1], None)  # the reload: cam1 is gone
    assert detector.sizes.open_sizes == [(256, 320)]
