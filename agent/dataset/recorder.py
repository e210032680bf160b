"""The dataset recorder: frames the VLM answered become training data, written off the inference thread.

Off by default; on for the cameras whose ``cameras[].record`` (default ``dataset.record``) is true, and only
with an escalation gateway. What is recorded (:mod:`agent.dataset.record` has the file format):

* **escalated** frames whose escalation ended with the VLM's answer (status ``answered``, in revision 1 or
  in a revision 2 after a publish timeout): the full frame, every detection the prefilter returned, the
  triage decision and the VLM's answer. Nothing is recorded for a frame the VLM did not answer
  (``timeout`` with no later answer, ``unavailable``, ``rejected``, ``rate_limited``, ``invalid_answer``),
  nor for ``cached`` frames (a near-duplicate of a frame that was asked, so it adds little);
* **learn-mode frames** (cameras with no prefilter, :mod:`agent.escalation.sampler`): the sampled frames the
  VLM answered, recorded as escalated frames of a classifier whose classes are the taxonomy's canonical labels
  (:func:`learn_model_ref`: ``pass`` and the taxonomy's labels; model id ``none:learn-mode``, no
  detections), the VLM's tag words mapped to their canonical label where the taxonomy knows them (its
  defects keep the VLM's words). So ``dataset export --format imagefolder`` makes a classifier training set
  of the plant's classes: ``pass`` and the taxonomy's defect labels;
* **confident samples**: each frame the prefilter decided alone is kept with probability
  ``dataset.confident_sample``, labelled by the prefilter only (``vlm: null``), so the dataset is not made
  of hard frames only.

How it hooks in (two calls, neither waits on I/O):

* :meth:`DatasetRecorder.observe`, on the inference thread for every inspection (the service's
  ``on_inspection``): a confident frame drawn for the sample is queued for writing; an escalated frame is
  held (a reference to its image, no copy) until its outcome is known, at most ``dataset.max_pending``
  frames (the oldest is dropped and counted past that) and at most ``escalation.call_deadline_s`` + 1 s;
* :meth:`DatasetRecorder.outcome`, for every event the escalation thread publishes (a listener of the
  runtime's event fan-out, ``agent.runtime.listeners.RecorderListener``, calls it): an answer queues the held
  frame for writing, any other final status lets it go. An outcome may come before the observation (a frame
  refused at once is published inside ``submit``); it is kept (bounded) until the observation arrives.

Writing (JPEG encoding at ``dataset.jpeg_quality``, the atomic write, eviction) runs on one
``dataset-writer`` thread fed by a queue of ``dataset.queue_size`` frames; when it is full, a frame is
dropped and counted (``dropped{reason="queue_full"}``): inspection never waits for the disk. Bounds and
eviction (oldest capture time first) are :class:`agent.dataset.store.RecordStore`'s. Counters:
:meth:`DatasetRecorder.stats` (the stats topic and ``/metrics``).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import cv2

from agent.config.loader import default_state_dir
from agent.config.models import AgentConfig, DatasetConfig
from agent.core.detections import Detection, PrefilterResult
from agent.core.event import TagEvent
from agent.core.inspection import Inspection
from agent.dataset.record import DatasetRecord, RecordedDetection, RecordKind, VlmLabel, record_id
from agent.dataset.store import RecordStore
from agent.escalation.sampler import LEARN_MODEL_ID

__all__ = ["DROP_REASONS", "DatasetRecorder", "DatasetStats", "ModelRef", "learn_model_ref",
           "open_recorder"]

log = logging.getLogger(__name__)

DROP_REASONS = ("queue_full", "pending_full", "model_changed")
_EARLY_MAX = 256  # outcomes kept while their frame's observation has not arrived
_WARN_EVERY_S = 60.0


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """The prefilter model a frame was inspected with, as the record names it."""

    model_id: str
    digest: str | None
    task: str
    names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    frames: int  # records on disk now
    bytes: int
    recorded: dict[str, int]  # written since start, by kind: escalated, confident_sample
    dropped: dict[str, int]  # not written, by reason: queue_full, pending_full, model_changed
    evicted: int  # deleted to stay within the bounds since start
    failed: int  # writes the disk refused (logged)
    not_answered: int  # escalated frames let go: the VLM did not answer
    pending: int  # escalated frames waiting for their outcome
    queued: int  # frames waiting for the writer thread


@dataclasses.dataclass(frozen=True)
class _Job:
    inspection: Inspection
    kind: RecordKind
    event: TagEvent  # the published event: the answered one for escalated frames


@dataclasses.dataclass(frozen=True)
class _Pending:
    inspection: Inspection
    expires: float  # time.monotonic()


class DatasetRecorder:
    """See the module doc. ``model`` returns the prefilter now running (called on the writer thread when a
    frame names a model not seen before); ``pending_ttl_s`` is how long an escalated frame waits for its
    answer (``escalation.call_deadline_s`` + 1 s)."""

    def __init__(self, config: DatasetConfig, store: RecordStore, *, device: str, cameras: Iterable[str],
                 model: Callable[[], ModelRef], pending_ttl_s: float, rng: random.Random | None = None,
                 learn_model: ModelRef | None = None) -> None:
        self.config = config
        self._learn_model = learn_model  # how learn-mode frames' records name their classes
        self.store = store
        self._device = device
        self._cameras = frozenset(cameras)
        self._model = model
        self._models: dict[str, ModelRef] = {}  # by model id: every model seen since start
        self._ttl = pending_ttl_s
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._pending: collections.OrderedDict[str, _Pending] = collections.OrderedDict()
        self._early: collections.OrderedDict[str, TagEvent] = collections.OrderedDict()
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=config.queue_size)
        self._recorded: collections.Counter[str] = collections.Counter({"escalated": 0, "confident_sample": 0})
        self._dropped: collections.Counter[str] = collections.Counter({r: 0 for r in DROP_REASONS})
        self._failed = self._not_answered = 0
        self._warned: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    # -- lifecycle (service thread) ----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dataset-writer", daemon=True)
        self._thread.start()
        log.info("dataset recording on", extra={"dir": str(self.store.root), "cameras": ",".join(sorted(
            self._cameras)), "frames": len(self.store), "max_frames": self.store.max_frames})

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to ``timeout``), then end the writer thread. Frames still waiting for an
        answer are let go."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("dataset: the writer did not catch up within %.1f s; %d queued frame(s) are not written",
                        timeout, self._queue.qsize())
        self._thread.join(timeout)
        self._thread = None

    def set_cameras(self, cameras: Iterable[str]) -> None:
        """The cameras recorded from now on (a config reload)."""
        self._cameras = frozenset(cameras)

    @property
    def cameras(self) -> frozenset[str]:
        return self._cameras

    def set_learn_model(self, ref: ModelRef | None) -> None:
        """The classes of learn-mode records from now on (a reload may change the taxonomy)."""
        self._learn_model = ref

    # -- hooks -------------------------------------------------------------------------------------

    def observe(self, inspection: Inspection) -> None:
        """On the inference thread, for every inspected frame; returns at once."""
        frame = inspection.frame
        if frame.camera_id not in self._cameras:
            return
        now = time.monotonic()
        event = inspection.event
        if not inspection.decision.needs_escalation:
            if self.config.confident_sample > 0 and self._rng.random() < self.config.confident_sample:
                self._enqueue(_Job(inspection, "confident_sample", event))
            return
        with self._lock:
            self._expire(now)
            early = self._early.pop(event.event_id, None)
            if early is None or early.escalation.status == "timeout":
                if len(self._pending) >= self.config.max_pending:
                    self._pending.popitem(last=False)
                    self._dropped["pending_full"] += 1
                    self._warn("pending_full", f"dataset: more than {self.config.max_pending} escalated frames "
                               "wait for their answer (dataset.max_pending); the oldest are not recorded")
                self._pending[event.event_id] = _Pending(inspection, now + self._ttl)
                return
            if early.escalation.status != "answered":
                self._not_answered += 1
                return
        self._enqueue(_Job(inspection, "escalated", early))

    def outcome(self, event: TagEvent) -> None:
        """For every event the escalation thread published: an answer gets its frame recorded."""
        status = event.escalation.status
        with self._lock:
            self._expire(time.monotonic())
            held = self._pending.get(event.event_id)
            if held is None:
                if event.camera in self._cameras and event.revision == 1:
                    self._early[event.event_id] = event
                    while len(self._early) > _EARLY_MAX:
                        self._early.popitem(last=False)
                elif event.event_id in self._early and status == "answered":
                    self._early[event.event_id] = event  # a revision 2 before the observation
                return
            if status == "timeout":
                return  # an answer may still come as revision 2, until the frame expires
            del self._pending[event.event_id]
            if status != "answered":
                self._not_answered += 1
                return
        self._enqueue(_Job(held.inspection, "escalated", event))

    def _expire(self, now: float) -> None:
        """Under the lock: let go of the frames whose answer can no longer come."""
        while self._pending:
            first = next(iter(self._pending.values()))
            if first.expires > now:
                break
            self._pending.popitem(last=False)
            self._not_answered += 1

    def _enqueue(self, job: _Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self._dropped["queue_full"] += 1
                self._warn("queue_full", f"dataset: the writer is behind ({self.config.queue_size} frames queued, "
                           "dataset.queue_size); frames are dropped, inspection goes on")

    # -- the writer thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._write(job)
            except (OSError, ValueError, cv2.error) as exc:
                with self._lock:
                    self._failed += 1
                    self._warn("failed", f"dataset: a record could not be written to {self.store.folder}: {exc}")

    def _write(self, job: _Job) -> None:
        insp = job.inspection
        model = self._model_of(insp.result)
        if model is None:
            with self._lock:
                self._dropped["model_changed"] += 1
            return
        ok, jpeg = cv2.imencode(".jpg", insp.frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:
            raise ValueError(f"OpenCV could not encode frame {insp.frame.sequence} of {insp.frame.camera_id}")
        record = build_record(insp, job.kind, job.event, model, self._device)
        self.store.add(record.id, jpeg.tobytes(), json.dumps(record.to_dict(), separators=(",", ":")).encode())
        with self._lock:
            self._recorded[job.kind] += 1

    def _model_of(self, result: PrefilterResult) -> ModelRef | None:
        """The model a result came from; None when the running model is another one now (during a swap, or
        after it: the frame's classes are not known for sure)."""
        if result.model_id == LEARN_MODEL_ID:
            return self._learn_model  # None without a taxonomy: the config refuses recording then
        known = self._models.get(result.model_id)
        if known is None:
            ref = self._model()
            if ref.model_id != result.model_id:
                return None
            known = self._models[result.model_id] = ref
        return known

    def _warn(self, key: str, message: str) -> None:
        """Under the lock: a warning at most once a minute per ``key``."""
        now = time.monotonic()
        if now - self._warned.get(key, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self._warned[key] = now
            log.warning(message)

    def stats(self) -> DatasetStats:
        with self._lock:
            self._expire(time.monotonic())
            return DatasetStats(
                frames=len(self.store), bytes=self.store.bytes, recorded=dict(self._recorded),
                dropped=dict(self._dropped), evicted=self.store.evicted, failed=self._failed,
                not_answered=self._not_answered, pending=len(self._pending), queued=self._queue.qsize())


def open_recorder(config: AgentConfig, model: Callable[[], ModelRef],
                  env: Mapping[str, str] | None = None) -> DatasetRecorder | None:
    """The recorder for ``config`` with its folder opened (DatasetError when it cannot be), not started; None
    when no camera records. ``dataset.dir`` defaults to ``dataset/`` in the agent's state directory."""
    cameras = [cam.id for cam in config.cameras if config.records(cam)]
    if not cameras:
        return None
    directory = config.dataset.dir or default_state_dir(os.environ if env is None else env) / "dataset"
    store = RecordStore.open(directory, config.dataset.max_frames, config.dataset.max_bytes)
    return DatasetRecorder(config.dataset, store, device=config.device_id, cameras=cameras, model=model,
                           pending_ttl_s=config.escalation.call_deadline_s + 1.0, learn_model=learn_model_ref(config))


LEARN_PASS_CLASS = "pass"
"""The class of a learn-mode frame the VLM called good (``dataset export``'s default ``--pass-class``)."""


def learn_model_ref(config: AgentConfig) -> ModelRef | None:
    """How the records of learn-mode frames name their classes, as a classifier would: :data:`LEARN_PASS_CLASS`,
    then the taxonomy's canonical labels, sorted. None without a taxonomy."""
    taxonomy = config.loaded_taxonomy
    if taxonomy is None:
        return None
    labels = sorted({m.canonical for m in taxonomy.index.values()} - {LEARN_PASS_CLASS})
    return ModelRef(LEARN_MODEL_ID, None, "classify", (LEARN_PASS_CLASS, *labels))


def build_record(inspection: Inspection, kind: RecordKind, event: TagEvent, model: ModelRef,
                 device: str) -> DatasetRecord:
    """The record of one frame (pure)."""
    frame, result, decision = inspection.frame, inspection.result, inspection.decision
    if result.task == "classify":
        raw = tuple(Detection(name, i, p, None) for i, (name, p) in enumerate(result.probabilities))
    elif result.task == "anomaly":  # the frame's anomaly confidence first (no box), then its regions
        raw = (Detection("anomaly", 0, result.anomaly or 0.0, None), *result.detections)
    else:
        raw = result.detections
    vlm = None
    if kind == "escalated":
        taxonomy = event.taxonomy if model.model_id == LEARN_MODEL_ID else None

        def word(label: str) -> str:  # learn mode: the VLM's word as the class it means
            mapped = taxonomy.map(label) if taxonomy is not None else None
            return mapped.canonical if mapped is not None else label

        vlm = VlmLabel(verdict=event.verdict, tags=tuple((word(t.label), t.confidence) for t in event.vlm_tags),
                       defects=tuple(dataclasses.asdict(d) for d in event.vlm_defects),
                       description=event.escalation.description, model=event.escalation.model)
    return DatasetRecord(
        id=record_id(frame.captured_at, frame.camera_id, frame.sequence, event.event_id), kind=kind,
        device=device, camera=frame.camera_id, sequence=frame.sequence, event_id=event.event_id,
        revision=event.revision, captured_at=frame.captured_at,
        recorded_at=datetime.datetime.now(datetime.timezone.utc), width=frame.width, height=frame.height,
        model_id=model.model_id, model_digest=model.digest, task=model.task, names=model.names,
        detections=tuple(_recorded(d) for d in raw), verdict=decision.verdict,
        tags=tuple(_recorded(t.detection, t.state) for t in decision.tags), vlm=vlm)


def _recorded(d: Detection, state: str | None = None) -> RecordedDetection:
    return RecordedDetection(d.label, d.class_id, d.confidence, d.box, state)
