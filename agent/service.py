"""The running agent: builds every stage from the config, runs, shuts down in order.

Start-up order is chosen so that bad input fails before anything is opened:
config (already parsed) -> model (loaded and checked) -> publisher (connecting
in the background) -> grabbers -> inference thread. Shutdown reverses it:
grabbers stop, the inference thread finishes its frame, the publisher flushes
what is in flight, then publishes ``offline`` and disconnects.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from agent.capture.grabber import Grabber, GrabberStats
from agent.config.loader import resolve_runtime_paths
from agent.config.models import AgentConfig
from agent.errors import ConfigError, ModelError
from agent.escalation.client import channel_credentials
from agent.escalation.escalator import EscalationStats, Escalator
from agent.health.agent import AgentHealth, ModelFacts, warm_up
from agent.health.notify import Notifier
from agent.metrics.agent import MeteredPublisher
from agent.pipeline import FrameInspector, InferenceLoop, Inspection, Prefilter, latency_percentiles
from agent.prefilter.classifier import ImageClassifier
from agent.prefilter.factory import open_prefilter
from agent.prefilter.gate_record import GateStatus, check_gate, file_precision
from agent.prefilter.model_info import file_digest
from agent.publish.event import TagEvent
from agent.publish.mqtt_publisher import MqttPublisher
from agent.publish.outbox import Outbox
from agent.publish.reliable import ReliablePublisher
from agent.publish.snapshot import SnapshotSender
from agent.publish.topics import stats_topic

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def start(self) -> None: ...
    def publish_stats(self, doc: dict[str, Any]) -> None: ...
    def publish_snapshot(self, camera: str, event_id: str, jpeg: bytes, durable: bool) -> bool: ...
    def wait_connected(self, timeout: float) -> bool: ...
    def publish_event(self, event: TagEvent) -> int: ...
    def flush(self, timeout: float) -> bool: ...
    def stop(self, timeout: float) -> None: ...
    def stats(self) -> Any: ...


@dataclasses.dataclass(frozen=True)
class RunSummary:
    seconds: float
    inspected: dict[str, int]
    verdicts: dict[str, int]
    escalations: dict[str, int]
    latency_p50_ms: float
    latency_p99_ms: float
    cameras: dict[str, GrabberStats]
    publisher: Any
    flushed: bool
    escalation: EscalationStats | None = None  # None when no gateway is configured


class AgentService:
    def __init__(
        self,
        config: AgentConfig,
        *,
        prefilter: Prefilter | None = None,
        publisher: Publisher | None = None,
        on_inspection: Callable[[Inspection], None] | None = None,
        on_camera_state: Callable[[str, str, str | None], None] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        # systemd notifications (READY, WATCHDOG, STATUS, STOPPING); a no-op without $NOTIFY_SOCKET
        self.notifier = notifier if notifier is not None else Notifier.from_environ()
        self.model_facts: ModelFacts | None = None
        self.metered: MeteredPublisher | None = None
        self.health: AgentHealth | None = None
        self._prefilter = prefilter
        self._publisher = publisher
        self._on_inspection = on_inspection
        self._on_camera_state = on_camera_state
        self.grabbers: list[Grabber] = []
        self.loop: InferenceLoop | None = None
        self.escalator: Escalator | None = None
        self._started_at = 0.0
        self._stats_stop = threading.Event()
        self._stats_thread: threading.Thread | None = None

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            raise RuntimeError("service not started")
        return self._publisher

    def start(self) -> None:
        gate: GateStatus | None = None
        precision: str | None = None
        if self._prefilter is None:
            model = open_prefilter(self.config.model.path, self.config.model)
            if isinstance(model, ImageClassifier):
                check_pass_label(self.config, model.info.names, str(model.info.path))
            log.info("model loaded: %s (%s)", model.info.model_id, model.info.task)
            gate = check_model_gate(model.info.path, self.config.model.require_gate)
            precision = file_precision(model.info.path)
            self._prefilter = model
        self.model_facts = warm_up(self._prefilter, gate, precision)  # one inference on a blank frame
        # constructing a grabber checks its source spec (no I/O yet): fail before connecting anywhere
        self.grabbers = [Grabber(cam, on_state=self._on_camera_state) for cam in self.config.cameras]
        escalation = self.config.escalation
        # the gateway's TLS files are read now, before anything connects
        credentials = channel_credentials(escalation.tls) if escalation.gateway and escalation.tls else None
        if self._publisher is None:
            self._publisher = build_publisher(self.config)
        self._publisher = self.metered = MeteredPublisher(self._publisher)  # counts events for /metrics
        if escalation.gateway is not None:
            self.escalator = Escalator(escalation, self._publisher, credentials=credentials, rates={
                cam.id: cam.escalation_rate for cam in self.config.cameras if cam.escalation_rate is not None})
        self._publisher.start()
        if self.escalator is not None:
            self.escalator.start()
        for g in self.grabbers:
            g.start()
        inspector = FrameInspector(self.config, self._prefilter)
        snapshots = SnapshotSender(self.config.snapshots, self._publisher) if self.config.snapshots.enabled else None
        self.loop = InferenceLoop(inspector, [(g.camera.id, g) for g in self.grabbers], self._publisher,
                                  self._on_inspection, snapshots, self.escalator)
        self._started_at = time.monotonic()
        self.loop.start()
        # /metrics + /healthz, then READY=1 once every camera was opened, WATCHDOG=1 while stages progress
        self.health = AgentHealth(self, self.notifier)
        self.health.start_endpoint()
        self.health.start_supervisor()
        if self.config.mqtt.stats_interval_s > 0:
            self._stats_thread = threading.Thread(target=self._stats_loop, name="stats", daemon=True)
            self._stats_thread.start()

    def wait(self, stop: threading.Event, duration: float | None = None) -> None:
        """Block until ``stop`` is set, ``duration`` passed, or every source ended."""
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set():
            if self.loop is not None and self.loop.finished:
                break
            remaining = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if remaining <= 0:
                break
            stop.wait(remaining)

    def _stats_loop(self) -> None:
        interval = self.config.mqtt.stats_interval_s
        while not self._stats_stop.wait(interval):
            try:
                self.publish_stats()
            except Exception:  # noqa: BLE001  stats are best effort; inspection goes on
                log.exception("publishing the periodic stats failed")

    def stats_document(self) -> dict[str, Any]:
        """The periodic ``<prefix>/<device>/stats`` payload."""
        s = self.summary()
        pub = s.publisher
        return {
            "device": self.config.device_id,
            "uptime_s": round(s.seconds, 1),
            "inspected": s.inspected,
            "verdicts": s.verdicts,
            "escalations": s.escalations,
            "prefilter_ms": {"p50": round(s.latency_p50_ms, 2), "p99": round(s.latency_p99_ms, 2)},
            "cameras": {cam: dataclasses.asdict(st) for cam, st in s.cameras.items()},
            "publisher": dataclasses.asdict(pub) if dataclasses.is_dataclass(pub) and not isinstance(pub, type)
            else None,
            "escalation": dataclasses.asdict(s.escalation) if s.escalation is not None else None,
        }

    def publish_stats(self) -> None:
        if self._publisher is not None:
            self._publisher.publish_stats(self.stats_document())

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started_at if self._started_at else 0.0

    def shutdown(self, timeout: float = 10.0) -> RunSummary:
        deadline = time.monotonic() + timeout
        if self.health is not None:
            self.health.stopping("stopping: finishing the current frames and flushing the outbox")
        self._stats_stop.set()
        if self._stats_thread is not None:
            self._stats_thread.join(1.0)
        for g in self.grabbers:
            g.stop(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        if self.loop is not None:
            self.loop.stop(timeout=max(0.1, deadline - time.monotonic()))
        if self.escalator is not None:
            # publishes every frame still waiting for the VLM (at most publish_deadline_s), before the flush
            self.escalator.stop(timeout=max(1.0, deadline - time.monotonic() - 1.0))
        flushed = True
        if self._publisher is not None:
            # while connected, give in-flight events time to be acknowledged; when the broker is away
            # there is nothing to wait for: the events are safe in the outbox for the next start
            connected = bool(getattr(self._publisher.stats(), "connected", True))
            flushed = self._publisher.flush(max(0.1, deadline - time.monotonic() - 1.0) if connected else 0.0)
            if not flushed:
                log.warning("shutdown: %s; unacknowledged events stay in the outbox and are sent after the next "
                            "start", "timed out waiting for the broker" if connected else "the broker is away")
            self._publisher.stop(max(0.5, deadline - time.monotonic()))
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


def check_pass_label(config: AgentConfig, names: tuple[str, ...], model: str) -> None:
    """A classifier's triage needs to know its good class: every triage band's ``pass_label``
    must be one of the model's classes."""
    bands = [("triage", config.triage)] + [(f"cameras[{i}].triage", c.triage) for i, c in enumerate(config.cameras)
                                           if c.triage is not None]
    problems = [f"{where}.pass_label: {band.pass_label!r} is not a class of the classifier {model} "
                f"({', '.join(names)}); set it to the class that means a good frame"
                for where, band in bands if band.pass_label not in names]
    if problems:
        raise ConfigError(problems)


def build_publisher(config: AgentConfig) -> ReliablePublisher:
    """Outbox + MQTT connection from the config (reads the password file, builds TLS)."""
    path = resolve_runtime_paths(config).outbox.path or pathlib.Path("outbox.sqlite")  # always filled in
    outbox = Outbox(path, max_rows=config.outbox.max_rows, max_bytes=config.outbox.max_bytes,
                    synchronous=config.outbox.synchronous)
    config = resolve_runtime_paths(config)
    try:
        mqtt = MqttPublisher.from_config(config.mqtt, config.device_id)
    except Exception:
        outbox.close()
        raise
    return ReliablePublisher(outbox, mqtt, topic_prefix=config.mqtt.topic_prefix, inflight=config.outbox.inflight,
                             stats_topic=stats_topic(config.mqtt.topic_prefix, config.device_id))


def check_model_gate(path: pathlib.Path, required: bool) -> GateStatus:
    """Say at start-up whether an INT8 model passed its accuracy gate; refuse if ``required``."""
    status = check_gate(path, file_digest(path), file_precision(path))
    if status.state == "passed":
        log.info("%s", status.detail)
    elif not status.ok:
        if required:
            raise ModelError(f"{status.detail} (model.require_gate is on)")
        log.warning("%s; starting anyway (set model.require_gate to refuse)", status.detail)
    return status
