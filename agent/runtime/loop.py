"""The agent's data flow in one place: grabbers -> prefilter -> triage -> event -> the event fan-out.

Threads: one grabber thread per camera (``agent.capture.grabber``), this module's
inference threads (:class:`InferenceLoop`: take and prepare frames; run the model,
one thread per model run in flight (``model.concurrent_runs``); decode/triage/publish,
so the model never waits for the Python around it), and paho's network thread inside
the publisher. Cameras are visited round-robin,
each one's next frame taken (the newest one, for live cameras), so one busy camera
cannot starve the others. With a gateway configured, uncertain frames are handed to
the escalation thread (``agent.escalation.escalator``), which publishes their
events; the publishing thread publishes the decided ones itself and never waits for
the VLM. Both hand their events to one sink, the runtime's fan-out (:mod:`agent.runtime.fanout`):
the publisher, then its listeners (metrics, dataset recorder, learn tally).

:class:`agent.runtime.inspector.FrameInspector` is the synchronous core (frame in, event out) that
the daemon, the demo and the tests share.

A config reload hands the loop a new inspector, camera list and snapshot sender at once
(:meth:`InferenceLoop.reconfigure`); the thread that takes frames swaps them between two frames, and
every batch of frames carries the config it was taken under, so a frame is always inspected with the
config of the camera list it was taken from.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.core.event import TagEvent
from agent.core.frame import Frame
from agent.core.inspection import Inspection
from agent.core.ports import BatchEventSink, ConcurrentRuns, Escalation, EventSink, FrameQueue, PerCameraState
from agent.core.priority import yield_to_model
from agent.escalation.sampler import LEARN_MODEL_ID
from agent.outputs.images.keeper import ImageKeeper
from agent.publish.snapshot import SnapshotSender
from agent.runtime.imaging import Rendered, keep_image, send_snapshot
from agent.runtime.inspector import FrameInspector

log = logging.getLogger(__name__)


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


_WAIT_S = 0.1  # how often a stage waiting for work looks at the stop flag


@dataclasses.dataclass
class _Batch:
    """Frames taken together, on their way through the stages. It carries the inspector and snapshot
    sender of the moment its frames were taken, so a reload never mixes configs within a frame."""

    inspector: FrameInspector
    snapshots: SnapshotSender | None
    frames: list[Frame]  # for the prefilter
    learn: list[Frame] = dataclasses.field(default_factory=list)  # of cameras in learn mode: no prefilter
    tensor: Any = None  # staged prefilter: the prepared model input (an array, or one per input size)
    plans: list[Any] = dataclasses.field(default_factory=list)
    buffer: Any = None
    pool: queue.Queue[Any] | None = None  # where ``buffer`` goes back once the model has read it
    spent_ms: float = 0.0  # time spent preparing and in the model
    output: Any = None  # what the model gave for ``tensor``
    inspections: list[Inspection] | None = None  # a prefilter without stages: inspected in one call
    runs: threading.Semaphore | None = None  # the model runs its prefilter allows at once
    done: threading.Event = dataclasses.field(default_factory=threading.Event)  # the model thread is through
    failed: bool = False  # the model raised on it: nothing to publish


@dataclasses.dataclass
class _ModelSlots:
    """What one prefilter's batches share: its input buffers (staged prefilters; one more than its
    concurrent runs, so the next frames are prepared while the model runs) and the semaphore that
    keeps its model calls at ``concurrent_runs`` at once."""

    owner: object
    runs: int
    pool: queue.Queue[Any]
    gate: threading.Semaphore


_END = None  # the last item through each stage's queue


class InferenceLoop:
    """Takes frames from every camera, inspects them and publishes their events, in three stages.

    ``inference-prepare`` takes at most one frame from each camera (round-robin, so one busy camera
    cannot starve the others) and, for a staged prefilter (``FrameInspector.staged``), letterboxes
    them into one of its preallocated model inputs; ``inference`` runs the model; ``inference-publish``
    decodes the output, triages, builds the events and publishes them (or hands uncertain frames to
    the escalation thread). So the next frames are prepared and the last ones published while the
    model runs: the model threads do nothing else. A prefilter without stages is called whole on a
    model thread, one call at a time.

    A staged prefilter with ``concurrent_runs`` N > 1 (``model.concurrent_runs``: ONNX Runtime runs
    one session from several threads) gets N model threads (``inference``, ``inference-2``, ...) and
    N + 1 inputs, so N batches are in the model at once: on a CPU whose cores one run cannot keep busy,
    that is the most frames per second. Batches are published in the order they were taken, whichever
    run ends first, so every camera's events keep their order. At most N + 2 batches are between taking
    and publishing; frames taken are always published, also when stopping. A live camera's frame is
    taken once an input is free, so it waits for at most the rest of one model run.
    """

    def __init__(
        self,
        inspector: FrameInspector,
        queues: Sequence[tuple[str, FrameQueue]],
        sink: EventSink,
        on_inspection: Callable[[Inspection], None] | None = None,
        snapshots: SnapshotSender | None = None,
        escalation: Escalation | None = None,
        images: ImageKeeper | None = None,
    ) -> None:
        self._inspector = inspector
        self._images = images  # audit images: queued before the event is published, which then names it
        self._escalation = escalation
        self._queues = list(queues)
        self._sink = sink
        self._batch_sink = sink if isinstance(sink, BatchEventSink) else None  # one commit per batch
        self._on_inspection = on_inspection
        self._snapshots = snapshots
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pending_lock = threading.Lock()
        self._pending: _Reconfiguration | None = None
        self._to_model: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._to_publish: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()  # in the order taken
        self._in_flight = 0  # batches taken and not yet published; at most the prefilter's runs + 2
        self._in_flight_cond = threading.Condition()
        self._slots: _ModelSlots | None = None  # the current prefilter's input buffers and run gate
        self._model_threads: list[threading.Thread] = []
        self._model_failed = False
        self._next_camera = 0
        self.counters = RunCounters()
        self.last_progress = time.monotonic()
        self.error: BaseException | None = None

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._guarded, args=(stage,), name=name, daemon=True)
                         for name, stage in (("inference-prepare", self._take_loop),
                                             ("inference-publish", self._publish_loop))]
        self._slots_for(self._inspector)  # the first prefilter's model threads
        for thread in self._threads:
            thread.start()

    @property
    def model_threads(self) -> int:
        """How many threads run the model (the most ``concurrent_runs`` of any prefilter so far)."""
        return len(self._model_threads)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking frames; the ones taken are inspected and published first (at most ``timeout`` s)."""
        self._stop.set()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the loop to end (all sources ended, or stopped). True if it ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._all_threads():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._all_threads())

    @property
    def finished(self) -> bool:
        return bool(self._threads) and not any(t.is_alive() for t in self._all_threads())

    def _all_threads(self) -> list[threading.Thread]:
        return [*self._threads, *self._model_threads]

    def reconfigure(
        self,
        inspector: FrameInspector,
        queues: Sequence[tuple[str, FrameQueue]],
        snapshots: SnapshotSender | None,
        timeout: float = 5.0,
    ) -> bool:
        """Replace the inspector, the cameras and the snapshot sender together, between two frames.

        The thread that takes frames applies the change before it takes its next ones; this waits up to
        ``timeout`` seconds for that and returns True once it happened (at once when the loop is not
        running). False: the loop is busy for longer; it applies the change after it. Frames taken
        before the change are inspected with the config they were taken under. Queues kept in the new
        list are the same objects, so their cameras see no gap.
        """
        change = _Reconfiguration(inspector, list(queues), snapshots, threading.Event())
        with self._pending_lock:
            self._pending = change
        if not self._taking():
            self._apply_pending()
        if not change.applied.wait(timeout) and not self._taking():
            self._apply_pending()  # the thread ended meanwhile (every source ended)
        return change.applied.is_set()

    def _taking(self) -> bool:
        return bool(self._threads) and self._threads[0].is_alive()

    def _apply_pending(self) -> None:
        with self._pending_lock:
            change, self._pending = self._pending, None
        if change is None:
            return
        self._inspector, self._queues, self._snapshots = change.inspector, change.queues, change.snapshots
        staged = change.inspector.staged
        if isinstance(staged, PerCameraState):  # a removed camera's input size may be unused now
            staged.retain_sources([camera for camera, _queue in change.queues])
        change.applied.set()

    # -- the three stages -----------------------------------------------------------------------------

    def _guarded(self, stage: Callable[[], None]) -> None:
        if stage != self._model_loop:
            yield_to_model()  # the threads around the model yield their cores to it (agent.core.priority)
        try:
            stage()
        except BaseException as exc:  # recorded for the service, which shuts down on it
            self._failed(exc)
        finally:  # the stages after this one end too, once they have finished what they hold
            if stage == self._take_loop:
                for _ in self._model_threads:
                    self._to_model.put(_END)
                self._to_publish.put(_END)

    def _failed(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        log.exception("inference loop failed (%s)", threading.current_thread().name)
        self._stop.set()

    def _take_loop(self) -> None:
        while not self._stop.is_set():
            if self._pending is not None:
                self._apply_pending()
            slots = self._slots_for(self._inspector)
            if not self._enter(slots.runs + 2):  # one being prepared, N in the model, one being published
                return
            batch = self._take(slots)
            if batch is None:
                self._leave()
                if self._pending is None and all(q.ended for _, q in self._queues):
                    log.info("all sources ended")
                    return
                continue
            self._to_publish.put(batch)  # published in this order, whichever model run ends first
            self._to_model.put(batch)

    def _take(self, slots: _ModelSlots) -> _Batch | None:
        """The next frames (at most one per camera), prepared when the prefilter is staged; None when none
        came within a short wait."""
        inspector, snapshots = self._inspector, self._snapshots
        staged = inspector.staged
        buffer = pool = None
        if staged is not None:
            pool = slots.pool
            buffer = self._get(pool)
            if buffer is None:
                return None
        frames = self._take_ready(max(1, staged.max_batch) if staged is not None else len(self._queues))
        if not frames:
            self.last_progress = time.monotonic()  # idle is progress: nothing to do
            # nothing ready: wait on the first camera briefly instead of spinning
            first = self._queues[0][1].take(0.02) if self._queues and self._pending is None else None
            frames = [first] if first is not None else []
        if not frames:
            if pool is not None:
                pool.put(buffer)
            return None
        learn = [f for f in frames if inspector.learns(f.camera_id)]
        if learn:
            frames = [f for f in frames if not inspector.learns(f.camera_id)]
        batch = _Batch(inspector, snapshots, frames, learn, runs=slots.gate)
        if staged is not None and not frames and pool is not None:
            pool.put(buffer)  # only learn-mode frames: the model has nothing to do
        elif staged is not None:
            t0 = time.perf_counter()
            batch.tensor, batch.plans = staged.prepare([inspector.model_input(f) for f in frames], buffer,
                                                       sources=[f.camera_id for f in frames])
            batch.buffer, batch.pool = buffer, pool
            batch.spent_ms = (time.perf_counter() - t0) * 1000.0
        return batch

    def _take_ready(self, limit: int) -> list[Frame]:
        """At most one frame from each camera that has one ready, at most ``limit`` in all; the camera asked
        first moves on by one each time, so no camera waits behind the others when they are more than
        ``limit``."""
        queues = self._queues
        if not queues:
            return []
        start = self._next_camera % len(queues)
        self._next_camera = start + 1
        frames: list[Frame] = []
        for _camera_id, q in queues[start:] + queues[:start]:
            frame = q.take(0.0)
            if frame is not None:
                frames.append(frame)
                if len(frames) >= limit:
                    break
        return frames

    def _model_loop(self) -> None:
        """One model thread. A batch whose run raised is marked failed (the loop then stops, the error
        recorded); batches not yet run by then are not run. Every batch is marked done, so the
        publishing thread never waits for one that will not come."""
        while (batch := self._to_model.get()) is not _END:
            try:
                if self._model_failed:
                    batch.failed = True
                    continue
                with batch.runs or contextlib.nullcontext():
                    self._run(batch)
            except BaseException as exc:
                batch.failed = self._model_failed = True
                self._failed(exc)
            finally:
                if batch.pool is not None:
                    batch.pool.put(batch.buffer)  # the model has read it (or never will): the next frames may go in
                batch.tensor = batch.buffer = batch.pool = None
                batch.done.set()

    @staticmethod
    def _run(batch: _Batch) -> None:
        staged = batch.inspector.staged
        if batch.tensor is not None and staged is not None:
            t0 = time.perf_counter()
            batch.output = staged.forward(batch.tensor)
            batch.spent_ms += (time.perf_counter() - t0) * 1000.0
        else:
            batch.inspections = batch.inspector.inspect_many(batch.frames)

    def _publish_loop(self) -> None:
        failed = False  # a model run failed: the batches taken after it are not published either
        while (batch := self._to_publish.get()) is not _END:
            batch.done.wait()
            try:
                failed = failed or batch.failed
                if failed:
                    continue
                inspections = batch.inspections
                if inspections is None:
                    staged = batch.inspector.staged
                    if batch.output is None or staged is None:
                        raise RuntimeError("a batch reached publishing without the model's output")
                    results = staged.finish(batch.output, batch.plans, batch.spent_ms)
                    inspections = batch.inspector.inspections(batch.frames, results)
                for frame in batch.learn:
                    learned = batch.inspector.learn(frame, time.monotonic())
                    if learned is not None:
                        inspections = [*inspections, learned]
                self._handle(inspections, batch.snapshots, batch.inspector)
            finally:
                self._leave()

    def _handle(self, inspections: Sequence[Inspection], snapshots: SnapshotSender | None,
                inspector: FrameInspector) -> None:
        """One batch's inspections: the uncertain ones to the escalation thread, the decided ones' events to the
        sink in one call (one outbox transaction), then their snapshots and ``on_inspection``."""
        c = self.counters
        decided: list[TagEvent] = []
        rendered: list[Rendered | None] = []
        for inspection in inspections:
            frame = inspection.frame
            if inspection.result.model_id != LEARN_MODEL_ID:  # learn-mode frames are counted by the inspector's tally
                c.inspected[frame.camera_id] += 1
                c.latencies_ms.append(inspection.result.latency_ms)
            event, image = keep_image(self._images, snapshots, inspection)
            rendered.append(image)
            if self._escalation is not None and inspection.decision.needs_escalation:
                # never waits for the VLM: the escalation thread publishes this event (and counts it)
                # the VLM sees what the prefilter inspected: a camera's ignored zones are blanked out
                self._escalation.submit(inspector.escalation_frame(frame), inspection.decision, event)
            else:
                c.verdicts[event.verdict] += 1
                c.escalations[event.escalation.status] += 1
                decided.append(event)
        if self._batch_sink is not None:
            self._batch_sink.publish_events(decided)
        else:
            for event in decided:
                self._sink.publish_event(event)
        for inspection, image in zip(inspections, rendered, strict=True):
            send_snapshot(snapshots, inspection, image)
            if self._on_inspection is not None:
                self._on_inspection(inspection)
        self.last_progress = time.monotonic()

    # -- helpers --------------------------------------------------------------------------------------

    def _slots_for(self, inspector: FrameInspector) -> _ModelSlots:
        """The input buffers and run gate of ``inspector``'s prefilter, made on first use (a reload with
        another model gets new ones; the old ones go with the batches that still hold them), with as
        many model threads as it may run at once."""
        staged = inspector.staged
        owner = staged if staged is not None else inspector
        if self._slots is None or self._slots.owner is not owner:
            runs = max(1, staged.concurrent_runs) if isinstance(staged, ConcurrentRuns) else 1
            pool: queue.Queue[Any] = queue.Queue()
            if staged is not None:
                for _ in range(runs + 1):
                    pool.put(staged.new_input())
            self._slots = _ModelSlots(owner, runs, pool, threading.Semaphore(runs))
            while len(self._model_threads) < runs:
                n = len(self._model_threads) + 1
                thread = threading.Thread(target=self._guarded, args=(self._model_loop,), daemon=True,
                                          name="inference" if n == 1 else f"inference-{n}")
                self._model_threads.append(thread)
                thread.start()
        return self._slots

    def _enter(self, limit: int) -> bool:
        """Wait until fewer than ``limit`` batches are between taking and publishing, and count one more;
        False when stopping."""
        with self._in_flight_cond:
            while self._in_flight >= limit:
                if self._stop.is_set():
                    return False
                self._in_flight_cond.wait(_WAIT_S)
            if self._stop.is_set():
                return False
            self._in_flight += 1
            return True

    def _leave(self) -> None:
        with self._in_flight_cond:
            self._in_flight -= 1
            self._in_flight_cond.notify_all()

    def _get(self, pool: queue.Queue[Any]) -> Any:
        while not self._stop.is_set():
            try:
                return pool.get(timeout=_WAIT_S)
            except queue.Empty:
                continue
        return None


def latency_percentiles(values: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) of ``values`` in the same unit; (0, 0) when empty."""
    if not values:
        return 0.0, 0.0
    ordered = sorted(values)
    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
    return pick(0.5), pick(0.99)

