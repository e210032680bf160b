"""The running agent: builds every stage from the config, runs, shuts down in order.

Start-up order is chosen so that bad input fails before anything is opened:
config (already parsed) -> model (loaded and checked) -> publisher (connecting
in the background) -> grabbers -> inference thread. Shutdown reverses it:
grabbers stop, the inference thread finishes its frame, the publisher flushes
what is in flight, then publishes ``offline`` and disconnects.

A reload (SIGHUP: :meth:`AgentService.reload_file`) follows :mod:`agent.config.reload`: whatever
can fail (the new model, camera source specs, a classifier's labels) is prepared first, next to
the running stages; only then does the inference thread switch to the new cameras and config
between two frames, gone cameras are stopped and new ones started. Unchanged cameras, the
publisher and its outbox are never touched, so nothing accepted is lost.

Every camera's state (:mod:`agent.publish.camera_status`) is part of the retained device status:
the grabbers report to a :class:`CameraStatusBoard` (a lock, no I/O, on their threads) and a
:class:`StatusRepublisher` thread republishes the status, at most once per
``camera_status_interval_s`` (1 s) for the device, the latest state always last. A reload attaches
added and restarted cameras to the board and detaches removed ones.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import pathlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.capture.grabber import Grabber, GrabberStats
from agent.config.loader import load_config
from agent.config.models import AgentConfig, CameraConfig
from agent.config.reload import ReloadPlan, plan_reload
from agent.core.inspection import Inspection
from agent.core.ports import DescribedPrefilter, Prefilter, Publisher, ReliableStats
from agent.dataset.recorder import DatasetRecorder, ModelRef, learn_model_ref, open_recorder
from agent.errors import ConfigError, EdgeAgentError
from agent.escalation.client import channel_credentials
from agent.escalation.escalator import EscalationStats, Escalator
from agent.escalation.sampler import LearnSampler, LearnTally
from agent.ops.health import AgentHealth
from agent.ops.metrics import EventMetrics
from agent.ops.notify import Notifier
from agent.ops.snapshot import AgentSnapshot, Progress
from agent.outputs.images.keeper import ImageKeeper, images_stats, open_keeper
from agent.outputs.plc.output import PlcOutputs
from agent.outputs.sparkplug.node import SparkplugNode
from agent.prefilter.classifier import ImageClassifier
from agent.prefilter.warmup import ModelFacts, warm_up
from agent.publish.camera_status import CameraStatusBoard, StatusRepublisher
from agent.publish.snapshot import SnapshotSender
from agent.runtime.building import (
    CameraStateListener,
    StateRelay,
    build_publisher,
    check_pass_label,
    digest_or_none,
    grabber_for_reload,
    load_model,
)
from agent.runtime.fanout import EventFanout
from agent.runtime.imaging import attach_images
from agent.runtime.inspector import FrameInspector
from agent.runtime.listeners import RecorderListener, TallyListener
from agent.runtime.loop import InferenceLoop, latency_percentiles
from agent.runtime.opcua import open_opcua_server
from agent.runtime.reloading import PreparedReload, ReloadResult
from agent.runtime.snapshots import progress_of
from agent.runtime.sparkplug import attach_sparkplug, build_sparkplug, stop_sparkplug

if TYPE_CHECKING:  # asyncua (the plant extra) is loaded only when the OPC UA server is enabled
    from agent.outputs.opcua_server.server import OpcUaServer

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    seconds: float
    inspected: dict[str, int]
    verdicts: dict[str, int]
    escalations: dict[str, int]
    latency_p50_ms: float
    latency_p99_ms: float
    cameras: dict[str, GrabberStats]
    publisher: ReliableStats | None
    flushed: bool
    escalation: EscalationStats | None = None  # None when no gateway is configured


_RELOAD_SWAP_S = 5.0  # how long a reload waits for the inference thread to finish its frame
_RELOAD_STOP_S = 2.0  # how long it waits for each removed camera's grabber thread


class AgentService:
    def __init__(
        self,
        config: AgentConfig,
        *,
        prefilter: Prefilter | None = None,
        publisher: Publisher | None = None,
        on_inspection: Callable[[Inspection], None] | None = None,
        on_camera_state: CameraStateListener | None = None,
        notifier: Notifier | None = None,
        camera_status_interval_s: float = 1.0,
    ) -> None:
        self.config = config
        # systemd notifications (READY, WATCHDOG, STATUS, STOPPING); a no-op without $NOTIFY_SOCKET
        self.notifier = notifier if notifier is not None else Notifier.from_environ()
        self.model_facts: ModelFacts | None = None
        # every tag event goes through this fan-out once: the publisher, then the listeners (metrics, ...)
        self.events: EventFanout | None = None
        self.metrics = EventMetrics()
        self.health: AgentHealth | None = None
        self._prefilter = prefilter
        self._publisher = publisher
        self._on_inspection = on_inspection
        self._on_camera_state = on_camera_state
        # each camera's state in the retained status; republished by its own thread, rate-limited
        self.camera_status = CameraStatusBoard()
        self._status_republisher: StatusRepublisher | None = None
        self._camera_status_interval_s = camera_status_interval_s
        self.grabbers: list[Grabber] = []
        self.loop: InferenceLoop | None = None
        self.escalator: Escalator | None = None
        self.sparkplug: SparkplugNode | None = None  # the Sparkplug B edge node (sparkplug.enabled)
        self.recorder: DatasetRecorder | None = None  # the dataset recorder, while a camera records
        self.opcua_server: OpcUaServer | None = None  # the agent's OPC UA server (opcua_server.enabled)
        self.images: ImageKeeper | None = None  # audit images (images:), while a camera keeps them
        self._recorder_listener = RecorderListener(None)  # tells the recorder the escalated events' outcomes
        self._started_at = 0.0
        self._stats_stop = threading.Event()
        self._stats_thread: threading.Thread | None = None
        self._model_digest: str | None = None  # of the model file this service loaded (None: handed in)
        self._reload_lock = threading.Lock()
        # learn mode (agent.escalation.sampler): which frames of the learning cameras go to the VLM, and the
        # fate of every one of their frames
        self.learn_tally = LearnTally(c.id for c in config.cameras if config.learns(c))
        self._sampler = LearnSampler()
        # results to the line's PLCs (docs/plc.md); no I/O until start()
        self.plc = PlcOutputs(config.plc, [(c.id, c.plc) for c in config.cameras])

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            raise RuntimeError("service not started")
        return self._publisher

    def start(self) -> None:
        if self._prefilter is None:
            if self.config.needs_model:
                self._prefilter, self.model_facts, self._model_digest = load_model(self.config)
            else:
                log.info("no prefilter: every camera is in learn mode (a sample of their frames goes to the VLM)")
        else:
            self.model_facts = warm_up(self._prefilter, None, None)  # one inference on a blank frame
        # constructing a grabber checks its source spec (no I/O yet): fail before connecting anywhere
        self.grabbers = [self._make_grabber(cam) for cam in self.config.cameras]
        self.images = open_keeper(self.config)  # its folder opens now (ImagesError when it cannot)
        escalation = self.config.escalation
        # the gateway's TLS files are read now, before anything connects
        credentials = channel_credentials(escalation.tls) if escalation.gateway and escalation.tls else None
        self.sparkplug = build_sparkplug(self.config)
        if self._publisher is None:
            self._publisher = build_publisher(self.config)
        self.events = EventFanout(self._publisher, [self.metrics, self._recorder_listener,
                                                    TallyListener(self.learn_tally), self.plc])
        self.opcua_server = open_opcua_server(self.config, self.snapshot, self.events)  # listening, or an error
        attach_sparkplug(self.sparkplug, self.events, self._publisher)  # hears of every event after the outbox
        self._publisher.add_status_extra(self.camera_status.status_fields)
        self._publisher.add_status_extra(self.learn_tally.status_fields)
        self._publisher.add_status_extra(self._model_status)
        self._publisher.add_status_extra(self.plc.status_fields)
        self._status_republisher = StatusRepublisher(self._publisher.republish_status,
                                                     interval_s=self._camera_status_interval_s)
        self.camera_status.on_change = self._status_republisher.poke
        attach_images(self.images, self.events, self._publisher, self._status_republisher.poke)
        self._status_republisher.start()
        if escalation.gateway is not None:
            self.recorder = self._recorder_listener.recorder = open_recorder(self.config, self._model_ref)
            self.escalator = Escalator(escalation, self.events.escalated,
                                       credentials=credentials, rates={
                cam.id: cam.escalation_rate for cam in self.config.cameras if cam.escalation_rate is not None})
        self._publisher.start()
        for part in (self.sparkplug, self.images, self.escalator, self.recorder):  # each one optional
            if part is not None:
                part.start()
        self.plc.start(self._status_republisher.poke)  # connects in the background; a PLC away is reported
        for g in self.grabbers:
            self.camera_status.attach(g.camera.id, g)
            g.start()
        inspector = FrameInspector(self.config, self._prefilter, sampler=self._sampler, tally=self.learn_tally)
        queues = [(g.camera.id, self.plc.gate(g.camera.id, g)) for g in self.grabbers]  # handshake: on trigger
        self.loop = InferenceLoop(inspector, queues, self.events, self._inspected,
                                  self._snapshot_sender(self.config), self.escalator, self.images)
        self._started_at = time.monotonic()
        self.loop.start()
        # /metrics + /healthz, then READY=1 once every camera was opened, WATCHDOG=1 while stages progress
        self.health = AgentHealth(self.progress, self.snapshot, self.config.health, self.config.metrics,
                                  self.notifier)
        self.health.start_endpoint()
        self.health.start_supervisor()
        if self.config.mqtt.stats_interval_s > 0:
            self._stats_thread = threading.Thread(target=self._stats_loop, name="stats", daemon=True)
            self._stats_thread.start()

    def _inspected(self, inspection: Inspection) -> None:
        """The inference loop's ``on_inspection``: the dataset recorder sees the frame, then the caller's hook."""
        recorder = self.recorder
        if recorder is not None:
            recorder.observe(inspection)
        if self._on_inspection is not None:
            self._on_inspection(inspection)

    def _model_ref(self) -> ModelRef:
        """The running prefilter, as dataset records name it (called by the recorder on a new model id)."""
        if not isinstance(self._prefilter, DescribedPrefilter):  # none (learn mode), or handed in without model
            return ModelRef("", None, "detect", ())                 # info: not recorded
        info = self._prefilter.info
        digest = self._model_digest  # set just after the prefilter in a reload: check they go together
        if digest is not None and not info.model_id.endswith("@" + digest[:12]):
            digest = None
        return ModelRef(info.model_id, digest, info.task, tuple(info.names))

    def _snapshot_sender(self, config: AgentConfig) -> SnapshotSender | None:
        return SnapshotSender(config.snapshots, self.publisher) if config.snapshots.enabled else None

    def wait(self, stop: threading.Event, duration: float | None = None,
             wake: threading.Event | None = None) -> None:
        """Block until ``stop`` (or ``wake``) is set, ``duration`` passed, or every source ended."""
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set() and not (wake is not None and wake.is_set()):
            if self.loop is not None and self.loop.finished:
                break
            remaining = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if remaining <= 0:
                break
            stop.wait(remaining)

    # -- reload (SIGHUP) ------------------------------------------------------------------------------

    def reload_file(self, path: pathlib.Path | str | None) -> ReloadResult:
        """Re-read the config file (``None``: defaults and the environment, as at start-up) and apply it.

        A config that does not load, validate or work (a model that does not load, a camera source
        nobody understands) is refused: the running config stays, one error names every problem, and
        ``STATUS=`` says so. systemd hears ``RELOADING=1`` first and ``READY=1`` at the end either way.
        """
        source = "the defaults" if path is None else str(path)
        health = self.health
        if health is not None:
            health.reloading()
        log.info("reloading the config from %s", source, extra={"reload": "started", "config": source})
        try:
            try:
                result = self.reload(load_config(path))
            except ConfigError as exc:
                result = ReloadResult(False, problems=tuple(exc.problems))
            except EdgeAgentError as exc:
                result = ReloadResult(False, problems=(str(exc),))
        except Exception as exc:  # a bug: say so, and go on with what runs
            log.exception("config reload from %s failed", source)
            result = ReloadResult(False, problems=(f"internal error while reloading: {exc!r}",))
        stamp = time.strftime("%H:%M:%S")
        if result.applied:
            what = result.describe()
            needs_restart = result.plan.needs_restart if result.plan is not None else ()
            if needs_restart:
                what += "; restart the agent to apply them"
            log.log(logging.WARNING if needs_restart else logging.INFO, "config reloaded from %s: %s", source, what,
                    extra={"reload": "applied", "config": source, "needs_restart": ", ".join(needs_restart)})
            note = f"config reloaded at {stamp}: {what}"
        else:
            problems = result.problems or ("?",)
            log.error("config reload refused, the running config stays: %s: %d problem(s): %s", source,
                      len(problems), "; ".join(problems), extra={"reload": "refused", "config": source})
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            note = f"reload at {stamp} refused, running the previous config: {problems[0]}{more}"
        if health is not None:
            health.reloaded(note)
        return result

    def reload(self, new: AgentConfig) -> ReloadResult:
        """Apply ``new`` to the running agent (see :mod:`agent.config.reload`). EdgeAgentError when a part of
        it cannot run (the model, a camera's source spec, a classifier's labels): then nothing has changed."""
        with self._reload_lock:
            loop = self.loop
            if loop is None:
                raise RuntimeError("the service is not started")
            ready = self._prepare_reload(plan_reload(self.config, new))
            self._switch_cameras(loop, ready)
            self._switch_outputs(ready)
            return ReloadResult(True, ready.plan, model_reloaded=ready.model_reloaded)

    def _prepare_reload(self, plan: ReloadPlan) -> PreparedReload:
        """Step 1 of a reload: everything that can fail, prepared beside the running stages (the model, a
        classifier's labels, the recorder's folder when recording is turned on, new cameras' grabbers)."""
        cfg = plan.config
        prefilter, facts, digest = self._prefilter, self.model_facts, self._model_digest
        reload_model = cfg.needs_model and (prefilter is None or plan.model_changed or (
            digest is not None and digest_or_none(cfg.model.path) != digest))
        if not cfg.needs_model:
            prefilter, facts, digest = None, None, None  # every camera learns now: no model runs
        elif reload_model:
            prefilter, facts, digest = load_model(cfg)
        elif isinstance(prefilter, ImageClassifier):
            check_pass_label(cfg, prefilter.info.names, str(prefilter.info.path))
        recording = {cam.id for cam in cfg.cameras if cfg.records(cam)}
        recorder = self.recorder
        if recorder is None and recording and self.escalator is not None:
            recorder = open_recorder(cfg, self._model_ref)  # recording turned on: its folder opens now
        fresh = {cam.id: grabber_for_reload(index, cam, self._make_grabber) for index, cam in enumerate(cfg.cameras)
                 if cam.id in plan.added or cam.id in plan.restarted}
        return PreparedReload(plan, prefilter, facts, digest, reload_model, recording, recorder, fresh)

    def _switch_cameras(self, loop: InferenceLoop, ready: PreparedReload) -> None:
        """Steps 2 and 3 of a reload: the inference thread switches between two frames (unchanged cameras keep
        their grabber); the status shows the new set of cameras (the old grabbers' last reports are ignored);
        the cameras gone or changed stop (their frames taken so far are inspected and published), then the
        new ones start: a changed camera's device is free again."""
        plan, cfg, fresh = ready.plan, ready.plan.config, ready.fresh
        running = {g.camera.id: g for g in self.grabbers}
        grabbers: list[Grabber] = []
        for cam in cfg.cameras:
            grabber = fresh.get(cam.id) or running[cam.id]
            grabber.camera = cam  # a retuned camera: the same capture settings, new triage/escalation rate
            grabbers.append(grabber)
        self.learn_tally.set_cameras(c.id for c in cfg.cameras if cfg.learns(c))
        inspector = FrameInspector(cfg, ready.prefilter, sampler=self._sampler, tally=self.learn_tally)
        if not loop.reconfigure(inspector, [(g.camera.id, self.plc.gate(g.camera.id, g)) for g in grabbers],
                                self._snapshot_sender(cfg), timeout=_RELOAD_SWAP_S):
            log.warning("reload: the inference thread is busy with one frame for over %.0f s; it switches to "
                        "the new config after it", _RELOAD_SWAP_S)
        for cam_id in plan.removed:
            self.camera_status.detach(cam_id)
        for cam_id, grabber in fresh.items():
            self.camera_status.attach(cam_id, grabber)
        for cam_id in (*plan.removed, *plan.restarted):
            if not running[cam_id].stop(timeout=_RELOAD_STOP_S):
                log.warning("reload: camera %s did not stop within %.0f s (blocked in a read); it ends with its "
                            "read", cam_id, _RELOAD_STOP_S)
        for grabber in fresh.values():
            grabber.start()
        self.grabbers = grabbers

    def _switch_outputs(self, ready: PreparedReload) -> None:
        """The last step of a reload: the recorder's cameras, the escalation rates, the running model and
        config."""
        cfg, recorder = ready.plan.config, ready.recorder
        if self.sparkplug is not None:
            self.sparkplug.set_cameras(c.id for c in cfg.cameras)
        if recorder is not None:
            recorder.set_cameras(ready.recording)
            recorder.set_learn_model(learn_model_ref(cfg))
            if self.escalator is not None and self._recorder_listener.recorder is None:
                self._recorder_listener.recorder = self.recorder = recorder
                recorder.start()
        if self.escalator is not None:
            self.escalator.set_rates({c.id: c.escalation_rate for c in cfg.cameras
                                      if c.escalation_rate is not None}, cfg.escalation.rate_per_camera)
        model_swapped = ready.prefilter is not self._prefilter  # a new model, or none (every camera learns now)
        self._prefilter, self.model_facts, self._model_digest = ready.prefilter, ready.facts, ready.digest
        self.config = cfg
        if model_swapped and self._status_republisher is not None:
            self._status_republisher.poke()  # the retained status names the running model and its classes

    def _model_status(self) -> dict[str, Any]:
        """The retained status's ``model`` (status.v1): the running prefilter's id, task and classes; nothing
        for a prefilter handed in without model info."""
        if not isinstance(self._prefilter, DescribedPrefilter):
            return {}
        info = self._prefilter.info
        return {"model": {"id": info.model_id, "task": info.task, "classes": list(info.names)}}

    def _make_grabber(self, camera: CameraConfig) -> Grabber:
        """A grabber whose state changes go to the status board and ``on_camera_state`` (SourceError for a
        source spec nobody understands). It reports to the board once attached there."""
        relay = StateRelay(self.camera_status, self._on_camera_state)
        grabber = Grabber(camera, on_state=relay)
        relay.grabber = grabber
        return grabber

    def _stats_loop(self) -> None:
        interval = self.config.mqtt.stats_interval_s
        while not self._stats_stop.wait(interval):
            try:
                self.publish_stats()
                if self.learn_tally.cameras and self._status_republisher is not None:
                    self._status_republisher.poke()  # the retained status's learn counts follow the stats
            except Exception:  # noqa: BLE001  stats are best effort; inspection goes on
                log.exception("publishing the periodic stats failed")

    def stats_document(self) -> dict[str, Any]:
        """The periodic ``<prefix>/<device>/stats`` payload."""
        s = self.summary()
        return {
            "device": self.config.device_id,
            "uptime_s": round(s.seconds, 1),
            "inspected": s.inspected,
            "verdicts": s.verdicts,
            "escalations": s.escalations,
            "prefilter_ms": {"p50": round(s.latency_p50_ms, 2), "p99": round(s.latency_p99_ms, 2)},
            "cameras": {cam: dataclasses.asdict(st) for cam, st in s.cameras.items()},
            "publisher": dataclasses.asdict(s.publisher) if s.publisher is not None else None,
            "escalation": dataclasses.asdict(s.escalation) if s.escalation is not None else None,
            # events per raw word the taxonomy does not map (empty without a taxonomy)
            "unmapped": self.metrics.unmapped_counts(),
            "dataset": dataclasses.asdict(self.recorder.stats()) if self.recorder is not None else None,
            # learn mode: per learning camera, every frame's fate and the sampled frames' escalation statuses
            "learn": self.learn_tally.snapshot(),
            "plc": self.plc.stats_document(),  # per PLC camera: results written, errors, trigger-to-result
        }

    def publish_stats(self) -> None:
        if self._publisher is not None:
            self._publisher.publish_stats(self.stats_document())

    def progress(self) -> Progress:
        """The stages' progress now: what the watchdog's report reads (see :mod:`agent.ops.snapshot`)."""
        return progress_of(self.grabbers, self.loop, self.events, self._publisher)

    def snapshot(self) -> AgentSnapshot:
        """Everything health, ``/healthz`` and ``/metrics`` say about the agent now."""
        publisher = self._publisher if self.events is not None else None
        return AgentSnapshot(
            device_id=self.config.device_id, needs_model=self.config.needs_model, uptime_s=self.uptime_s,
            model=self.model_facts, progress=self.progress(), events=self.metrics.snapshot(),
            publisher=publisher.stats() if publisher is not None else None,
            mqtt_connects=publisher.connects if publisher is not None else 0,
            dataset=self.recorder.stats() if self.recorder is not None else None, learn=self.learn_tally.snapshot(),
            plc=self.plc.stats() if self.plc.active else None, images=images_stats(self.images))

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started_at if self._started_at else 0.0

    def shutdown(self, timeout: float = 10.0, *, outbox_kept: bool = True) -> RunSummary:
        """Stop everything within about ``timeout`` seconds. ``outbox_kept=False`` (the demo's temporary
        outbox): unacknowledged events are not announced as "sent after the next start"; the caller says
        what became of them (``RunSummary.publisher``)."""
        deadline = time.monotonic() + timeout
        if self.health is not None:
            self.health.stopping("stopping: finishing the current frames and flushing the outbox")
        self._stats_stop.set()
        if self._stats_thread is not None:
            self._stats_thread.join(1.0)
        if self._status_republisher is not None:
            self._status_republisher.stop(1.0)  # cameras stopping now are not news: "offline" follows
        for g in self.grabbers:
            g.stop(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        if self.loop is not None:
            self.loop.stop(timeout=max(0.1, deadline - time.monotonic()))
        if self.escalator is not None:
            # publishes every frame still waiting for the VLM (at most publish_deadline_s), before the flush
            self.escalator.stop(timeout=max(1.0, deadline - time.monotonic() - 1.0))
        self.plc.stop(timeout=max(0.5, min(2.0, deadline - time.monotonic() - 1.0)))  # the last results written
        for writer in (self.images, self.recorder):  # after the escalator: its last answers are kept too
            if writer is not None:
                writer.stop(timeout=max(0.5, min(5.0, deadline - time.monotonic() - 1.0)))
        flushed = True
        if self._publisher is not None:
            # while connected, give in-flight events time to be acknowledged; when the broker is away
            # there is nothing to wait for: the events are safe in the outbox for the next start
            connected = self._publisher.stats().connected
            flushed = self._publisher.flush(max(0.1, deadline - time.monotonic() - 1.0) if connected else 0.0)
            if not flushed and outbox_kept:
                log.warning("shutdown: %s; unacknowledged events stay in the outbox and are sent after the next "
                            "start", "timed out waiting for the broker" if connected else "the broker is away")
            self._publisher.stop(max(0.5, deadline - time.monotonic()))
        if self.opcua_server is not None:
            self.opcua_server.stop()
        stop_sparkplug(self.sparkplug, deadline)
        if self.health is not None:
            self.health.close()  # /metrics and /healthz answer until here
        return self.summary(flushed)

    def summary(self, flushed: bool = True) -> RunSummary:
        counters = self.loop.counters if self.loop else None
        p50, p99 = latency_percentiles(list(counters.latencies_ms)) if counters else (0.0, 0.0)
        escalation = self.escalator.stats() if self.escalator is not None else None
        verdicts = collections.Counter(counters.verdicts) if counters else collections.Counter()
        escalations = collections.Counter(counters.escalations) if counters else collections.Counter()
        if escalation is not None:  # uncertain frames are counted by the escalation thread that published them
            verdicts.update(escalation.verdicts)
            escalations.update(escalation.statuses)
        return RunSummary(
            seconds=time.monotonic() - self._started_at if self._started_at else 0.0,
            inspected=dict(counters.inspected) if counters else {},
            verdicts=dict(verdicts),
            escalations=dict(escalations),
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            cameras={g.camera.id: g.stats() for g in self.grabbers},
            publisher=self._publisher.stats() if self._publisher else None,
            flushed=flushed,
            escalation=escalation,
        )
