"""The agent's data flow in one place: grabbers -> prefilter -> triage -> event -> publisher.

Threads: one grabber thread per camera (``agent.capture.grabber``), this module's
one inference thread, and paho's network thread inside the publisher. The
inference thread visits the cameras round-robin and takes each one's next frame
(the newest one, for live cameras), so one busy camera cannot starve the others.
With a gateway configured, uncertain frames are handed to the escalation thread
(``agent.escalation.escalator``), which publishes their events; the inference
thread publishes the decided ones itself and never waits for the VLM.

``FrameInspector`` is the synchronous core (frame in, event out) that the daemon,
the demo and the tests share.

A config reload hands the loop a new inspector, camera list and snapshot sender at once
(:meth:`InferenceLoop.reconfigure`); the inference thread swaps them between two frames, so a
frame is always inspected with the config of the camera list it was taken from.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from agent.capture.frame import Frame
from agent.config.models import AgentConfig, CameraConfig
from agent.prefilter.detection import PrefilterResult
from agent.publish.event import TagEvent, build_event
from agent.publish.snapshot import SnapshotSender
from agent.triage.policy import TriageDecision, decide

log = logging.getLogger(__name__)


class Prefilter(Protocol):
    """A prefilter model (``YoloDetector``, ``ImageClassifier``: see ``agent.prefilter.factory``). One
    that also has ``infer_batch(images) -> list[PrefilterResult]`` and ``max_batch`` > 1 gets the frames
    of several cameras in one call."""

    def infer(self, image: np.ndarray) -> PrefilterResult: ...


class EventSink(Protocol):
    def publish_event(self, event: TagEvent) -> int: ...


class Escalation(Protocol):
    """Where uncertain frames go when a gateway is configured (``agent.escalation.escalator.Escalator``):
    ``submit`` returns at once; the frame's event is published from the escalation thread."""

    def submit(self, frame: Frame, decision: TriageDecision, event: TagEvent) -> None: ...


class FrameQueue(Protocol):
    """What the inference thread needs of a grabber."""

    def take(self, timeout: float) -> Frame | None: ...

    @property
    def ended(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class Inspection:
    """One inspected frame: the event plus what produced it (for live views and tests)."""

    frame: Frame
    result: PrefilterResult
    decision: TriageDecision
    event: TagEvent


class FrameInspector:
    """Frame -> prefilter -> triage -> tag event. No threads, no network."""

    def __init__(self, config: AgentConfig, prefilter: Prefilter) -> None:
        self._config = config
        self._prefilter = prefilter
        self._cameras: dict[str, CameraConfig] = {c.id: c for c in config.cameras}

    def inspect(self, frame: Frame) -> Inspection:
        return self._inspection(frame, self._prefilter.infer(frame.image))

    def inspect_many(self, frames: Sequence[Frame]) -> list[Inspection]:
        """Frames from several cameras, in one prefilter call where the model takes a batch
        (``infer_batch``, ``max_batch`` > 1); else one call each. Same inspections either way."""
        infer_batch = getattr(self._prefilter, "infer_batch", None)
        if len(frames) < 2 or infer_batch is None or getattr(self._prefilter, "max_batch", 1) < 2:
            return [self.inspect(frame) for frame in frames]
        results = infer_batch([frame.image for frame in frames])
        return [self._inspection(frame, result) for frame, result in zip(frames, results, strict=True)]

    def _inspection(self, frame: Frame, result: PrefilterResult) -> Inspection:
        camera = self._cameras.get(frame.camera_id)
        if camera is None:
            raise KeyError(f"frame from unknown camera {frame.camera_id!r}")
        decision = decide(result, self._config.triage_for(camera))
        event = build_event(
            device=self._config.device_id, camera=frame.camera_id, sequence=frame.sequence,
            captured_at=frame.captured_at, frame_width=frame.width, frame_height=frame.height,
            decision=decision, model_id=result.model_id, prefilter_latency_ms=result.latency_ms,
            taxonomy=self._config.loaded_taxonomy,
        )
        return Inspection(frame, result, decision, event)


@dataclasses.dataclass
class RunCounters:
    """Running totals of the inference loop (read by the summary and, later, metrics)."""

    inspected: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    verdicts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    escalations: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    """verdicts and escalations count the events this thread published; escalated frames are counted by
    the escalation thread (``Escalator.stats()``), and the service adds the two."""
    publish_refused: int = 0
    latencies_ms: collections.deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=2000))


@dataclasses.dataclass(frozen=True)
class _Reconfiguration:
    inspector: FrameInspector
    queues: list[tuple[str, FrameQueue]]
    snapshots: SnapshotSender | None
    applied: threading.Event


class InferenceLoop:
    """The inference thread: takes frames from every camera and publishes their events."""

    def __init__(
        self,
        inspector: FrameInspector,
        queues: Sequence[tuple[str, FrameQueue]],
        sink: EventSink,
        on_inspection: Callable[[Inspection], None] | None = None,
        snapshots: SnapshotSender | None = None,
        escalation: Escalation | None = None,
    ) -> None:
        self._inspector = inspector
        self._escalation = escalation
        self._queues = list(queues)
        self._sink = sink
        self._on_inspection = on_inspection
        self._snapshots = snapshots
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending_lock = threading.Lock()
        self._pending: _Reconfiguration | None = None
        self.counters = RunCounters()
        self.last_progress = time.monotonic()
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the loop to end (all sources ended, or stopped). True if it ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def finished(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def reconfigure(
        self,
        inspector: FrameInspector,
        queues: Sequence[tuple[str, FrameQueue]],
        snapshots: SnapshotSender | None,
        timeout: float = 5.0,
    ) -> bool:
        """Replace the inspector, the cameras and the snapshot sender together, between two frames.

        The inference thread applies the change before it takes its next frame; this waits up to
        ``timeout`` seconds for that and returns True once it happened (at once when the thread is not
        running). False: the thread is busy with a frame for longer; it applies the change after it.
        Queues kept in the new list are the same objects, so their cameras see no gap.
        """
        change = _Reconfiguration(inspector, list(queues), snapshots, threading.Event())
        with self._pending_lock:
            self._pending = change
        if self._thread is None or not self._thread.is_alive():
            self._apply_pending()
        if not change.applied.wait(timeout) and not (self._thread is not None and self._thread.is_alive()):
            self._apply_pending()  # the thread ended meanwhile (every source ended)
        return change.applied.is_set()

    def _apply_pending(self) -> None:
        with self._pending_lock:
            change, self._pending = self._pending, None
        if change is None:
            return
        self._inspector, self._queues, self._snapshots = change.inspector, change.queues, change.snapshots
        change.applied.set()

    def step(self) -> int:
        """Take at most one frame from each camera and process them (in one prefilter call when the
        model takes a batch). Returns frames processed."""
        if self._pending is not None:
            self._apply_pending()
        frames = [frame for _camera_id, queue in self._queues if (frame := queue.take(0.0)) is not None]
        for inspection in self._inspector.inspect_many(frames):
            self._handle(inspection)
        return len(frames)

    def _process(self, frame: Frame) -> None:
        self._handle(self._inspector.inspect(frame))

    def _handle(self, inspection: Inspection) -> None:
        frame = inspection.frame
        c = self.counters
        c.inspected[frame.camera_id] += 1
        c.latencies_ms.append(inspection.result.latency_ms)
        if self._escalation is not None and inspection.decision.needs_escalation:
            # never waits for the VLM: the escalation thread publishes this event (and counts it)
            self._escalation.submit(frame, inspection.decision, inspection.event)
        else:
            c.verdicts[inspection.event.verdict] += 1
            c.escalations[inspection.event.escalation.status] += 1
            self._sink.publish_event(inspection.event)
        if self._snapshots is not None:
            self._snapshots.send(frame.camera_id, inspection.event.event_id, frame.image, inspection.decision)
        self.last_progress = time.monotonic()
        if self._on_inspection is not None:
            self._on_inspection(inspection)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self.step():
                    continue
                if self._pending is None and all(q.ended for _, q in self._queues):
                    log.info("all sources ended")
                    return
                self.last_progress = time.monotonic()  # idle is progress: nothing to do
                if self._pending is not None:
                    continue  # a reconfiguration is waiting: apply it before taking a frame
                # nothing ready: wait on the first camera briefly instead of spinning
                frame = self._queues[0][1].take(0.02)
                if frame is not None:
                    self._process(frame)
        except BaseException as exc:  # recorded for the service, which shuts down on it
            self.error = exc
            log.exception("inference loop failed")


def latency_percentiles(values: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) of ``values`` in the same unit; (0, 0) when empty."""
    if not values:
        return 0.0, 0.0
    ordered = sorted(values)
    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
    return pick(0.5), pick(0.99)

