"""The agent's health: its stages' progress, readiness, STATUS line, ``/healthz`` document, and the
:class:`AgentHealth` that runs the supervisor thread and the metrics endpoint for an AgentService.

Stages checked (see :mod:`agent.ops.stages` for the rule):

* ``inference``: the inference thread; busy since its last progress stamp (it stamps after every
  frame and every idle wait), so a prefilter that hangs shows here.
* ``camera <id>``: each grabber; busy while inside a source open or read. A live camera
  waiting to reconnect is not busy. A source that gave up is ``failed``.
* ``outbox commit``: a ``publish_event`` call in progress (SQLite commit).
* ``outbox forwarder``: the thread that sends outbox rows over MQTT; busy since the start of
  its current pass (passes wait at most 0.2 s).

Readiness (READY=1): the model is loaded and warmed up and the outbox is open (both done in
``AgentService.start`` before this runs), and every camera has been opened, or tried once and is
now retrying (a box with one unplugged camera still inspects the others; STATUS says which
camera is missing). MQTT need not be connected: events wait in the outbox.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.config.models import HealthConfig
from agent.errors import MetricsError, ModelError
from agent.escalation.sampler import FATES
from agent.ops.endpoint import MetricsServer
from agent.ops.metrics import render_agent_metrics
from agent.ops.notify import Notifier
from agent.ops.stages import HealthReport, StageProgress, StageState, evaluate
from agent.ops.supervisor import Supervisor
from agent.prefilter.gate_record import GateStatus

if TYPE_CHECKING:
    from agent.core.ports import Prefilter
    from agent.runtime.service import AgentService

__all__ = ["AgentHealth", "ModelFacts", "agent_stages", "warm_up"]

log = logging.getLogger(__name__)

_OPENING = ("new", "connecting")


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What ``/metrics`` (``edge_agent_model_info``) and the STATUS line say about the model."""

    model_id: str
    task: str
    precision: str  # fp32 | fp16 | int8 | unknown
    gate: str  # passed | failed | missing | stale | unreadable | not_int8 | unknown
    providers: tuple[str, ...]  # the execution providers the session really uses
    warm_up_ms: float


def warm_up(prefilter: Prefilter, gate: GateStatus | None, precision: str | None) -> ModelFacts:
    """One inference on a blank frame of the model's input size (the first call allocates, and on a GPU
    builds kernels); ModelError when it fails. Returns what is known about the model."""
    info = getattr(prefilter, "info", None)
    width, height = (int(info.input_w), int(info.input_h)) if info is not None else (640, 480)
    blank = np.zeros((height, width, 3), np.uint8)
    t0 = time.perf_counter()
    try:
        prefilter.infer(blank)
    except ModelError:
        raise
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"the model's warm-up inference on a blank {width}x{height} frame failed: {exc}; the "
                         "model loads but cannot run here (check model.providers and `edge-agent doctor`)") from exc
    ms = (time.perf_counter() - t0) * 1000.0
    session = getattr(prefilter, "session", None)
    providers = tuple(session.get_providers()) if session is not None and hasattr(session, "get_providers") else ()
    facts = ModelFacts(
        model_id=str(getattr(info, "model_id", type(prefilter).__name__)), task=str(getattr(info, "task", "detect")),
        precision=precision or "unknown", gate=gate.state if gate is not None else "unknown", providers=providers,
        warm_up_ms=ms)
    log.info("model %s warmed up in %.1f ms (providers: %s)", facts.model_id, ms, ", ".join(providers) or "?")
    return facts


def agent_stages(service: AgentService, cfg: HealthConfig) -> list[StageProgress]:
    stages: list[StageProgress] = []
    loop = service.loop
    events = service.events
    if loop is not None:
        if not loop.finished:
            publishing = events is not None and events.busy_since is not None
            stages.append(StageProgress("inference", "running", loop.last_progress, cfg.inference_window_s,
                                        doing="committing an event to the outbox" if publishing
                                        else "inspecting a frame"))
        elif loop.error is not None:
            stages.append(StageProgress("inference", "dead", None, cfg.inference_window_s,
                                        reason=f"the inference thread ended: {loop.error!r}"))
        else:
            stages.append(StageProgress("inference", "idle", None, cfg.inference_window_s, reason="all sources ended"))
    for g in service.grabbers:
        name = f"camera {g.camera.id}"
        if g.alive:
            stages.append(StageProgress(name, "running", g.busy_since, cfg.capture_window_s, doing=g.busy_doing))
        else:
            st = g.stats()
            state: StageState = "failed" if st.state == "failed" else "idle"
            stages.append(StageProgress(name, state, None, cfg.capture_window_s,
                                        reason=(st.last_error or "") if state == "failed" else ""))
    if events is not None:
        stages.append(StageProgress("outbox commit", "running", events.busy_since, cfg.publish_window_s,
                                    doing="committing an event"))
        publisher = service.publisher
        if publisher.forwarder_alive:
            stages.append(StageProgress("outbox forwarder", "running", publisher.last_progress,
                                        cfg.publish_window_s, doing="sending outbox rows"))
        else:
            stages.append(StageProgress("outbox forwarder", "dead", None, cfg.publish_window_s,
                                        reason="the outbox forwarder thread ended (see the log); events stay "
                                        "in the outbox until a restart"))
    return stages


class AgentHealth:
    """Supervisor (sd_notify) and metrics endpoint of one AgentService."""

    def __init__(self, service: AgentService, notifier: Notifier) -> None:
        self.service = service
        self.notifier = notifier
        self.cfg = service.config.health
        self.supervisor = Supervisor(notifier, readiness=self.readiness, report=self.report, status=self.status_line,
                                     status_interval_s=self.cfg.status_interval_s)
        self.server: MetricsServer | None = None
        self._fps_mark: tuple[float, int] | None = None
        self.reload_note: str | None = None  # the last reload's outcome, shown in STATUS= until the next one

    @property
    def ready(self) -> bool:
        return self.supervisor.ready.is_set()

    def start_endpoint(self) -> None:
        """Serve /metrics and /healthz if ``metrics.enabled``. An address in use is logged as an error and
        the agent goes on without them: inspection matters more than its metrics."""
        mcfg = self.service.config.metrics
        if not mcfg.enabled:
            return
        server = MetricsServer(mcfg.listen, metrics=self.metrics_text, health=self.health_document)
        try:
            server.start()
        except MetricsError as exc:
            log.error("%s; running without /metrics and /healthz", exc)
            return
        self.server = server

    def start_supervisor(self) -> None:
        self.supervisor.start()

    def stopping(self, status: str) -> None:
        self.supervisor.stop(status)

    def reloading(self) -> None:
        """``RELOADING=1``, once systemd had ``READY=1`` (a reload during start-up is none of its business)."""
        if self.ready:
            self.notifier.reloading()

    def reloaded(self, note: str) -> None:
        """``READY=1`` after ``RELOADING=1``, whether the reload was applied or refused; ``note`` (what it did)
        stays in the STATUS= line until the next reload."""
        self.reload_note = note
        if self.ready:
            self.notifier.ready(self.status_line())

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.notifier.close()

    # -- what the supervisor and the endpoint ask ----------------------------------------------

    def report(self) -> HealthReport:
        return evaluate(agent_stages(self.service, self.cfg), time.monotonic())

    def readiness(self) -> tuple[bool, str]:
        waiting = [g.camera.id for g in self.service.grabbers if g.state in _OPENING]
        if waiting:
            return False, f"starting: opening camera{'s' if len(waiting) > 1 else ''} {', '.join(waiting)}"
        counters = self.service.loop.counters if self.service.loop is not None else None
        self._fps_mark = (time.monotonic(), sum(counters.inspected.values()) if counters is not None else 0)
        return True, "ready: " + self._startup_line()

    def _startup_line(self) -> str:
        s = self.service
        grabbers = s.grabbers
        online = [g.camera.id for g in grabbers if g.state == "online"]
        other = [f"{g.camera.id} {g.state}" for g in grabbers if g.state != "online"]
        cams = f"{len(online)}/{len(grabbers)} cameras online"
        if other:
            cams += f" ({', '.join(other)})"
        facts = s.model_facts
        model = (f"model {facts.model_id} warmed up in {facts.warm_up_ms:.0f} ms" if facts
                 else "no model (learn mode)" if not s.config.needs_model else "model loaded")
        return f"{cams}; {model}; {self._mqtt_words()}"

    def _mqtt_words(self) -> str:
        stats = self.service.publisher.stats() if self.service.events is not None else None
        if stats is None:
            return "no publisher"
        if getattr(stats, "connected", False):
            return "MQTT connected"
        return "MQTT not connected (events wait in the outbox)"

    def status_line(self) -> str:
        """``2/2 cameras online, 14.9 fps; pass 1200 defect 31 uncertain 80; outbox 0; MQTT connected``."""
        s = self.service
        counters = s.loop.counters if s.loop is not None else None
        total = sum(counters.inspected.values()) if counters is not None else 0
        now = time.monotonic()
        fps = 0.0
        if self._fps_mark is not None and now > self._fps_mark[0]:
            fps = (total - self._fps_mark[1]) / (now - self._fps_mark[0])
        self._fps_mark = (now, total)
        online = sum(1 for g in s.grabbers if g.state == "online")
        verdicts: dict[str, int] = {}
        for (_cam, verdict, _by), n in s.metrics.counts()[0].items():  # every published event, whichever
            verdicts[verdict] = verdicts.get(verdict, 0) + n                  # thread published it
        stats = s.publisher.stats() if s.events is not None else None
        pending = getattr(stats, "pending", None)
        outbox = f"outbox {pending}" if isinstance(pending, int) else "outbox ?"
        evicted = getattr(stats, "evicted", 0)
        if isinstance(evicted, int) and evicted:
            outbox += f" ({evicted} evicted)"
        return (f"{online}/{len(s.grabbers)} cameras online, {fps:.1f} fps; "
                + " ".join(f"{v} {verdicts.get(v, 0)}" for v in ("pass", "defect", "uncertain"))
                + self._learn_words()
                + f"; {outbox}; {self._mqtt_words()}" + (f"; {self.reload_note}" if self.reload_note else ""))

    def _learn_words(self) -> str:
        """``; learn: 12 of 340 frames sent to the VLM`` while a camera is in learn mode, else nothing."""
        counts = self.service.learn_tally.snapshot()
        if not counts:
            return ""
        taken = sum(n for c in counts.values() for k, n in c.items() if k in FATES)
        sent = sum(c["sampled_schedule"] + c["sampled_scene_change"] for c in counts.values())
        return f"; learn: {sent} of {taken} frames sent to the VLM"

    def metrics_text(self) -> str:
        return render_agent_metrics(self.service, self.report(), self.ready)

    def health_document(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, the JSON document of ``/healthz``)."""
        s = self.service
        report = self.report()
        ready = self.ready
        status = "starting" if not ready else "ok" if report.healthy else "unhealthy"
        stats = s.publisher.stats() if s.events is not None else None
        doc: dict[str, Any] = {
            "status": status,
            "ready": ready,
            "problems": list(report.problems) if ready else [self.readiness()[1], *report.problems],
            "device": s.config.device_id,
            "uptime_s": round(s.uptime_s, 1),
            "stages": report.as_dict(),
            "cameras": {st.camera_id: {"state": st.state, "frames_read": st.frames_read, "dropped": st.dropped,
                                       "reconnects": st.reconnects, "last_error": st.last_error}
                        for st in (g.stats() for g in s.grabbers)},
            "inspected": sum(s.loop.counters.inspected.values()) if s.loop is not None else 0,
            "learn": s.learn_tally.snapshot(),  # learn mode: every frame's fate per learning camera
            "mqtt": {"connected": bool(getattr(stats, "connected", False)),
                     "last_error": getattr(stats, "last_error", None)},
            "outbox": {"pending": getattr(stats, "pending", None), "evicted": getattr(stats, "evicted", None)},
            "last_reload": self.reload_note,
        }
        if s.model_facts is not None:
            f = s.model_facts
            doc["model"] = {"id": f.model_id, "precision": f.precision, "gate": f.gate, "providers": list(f.providers)}
        return ready and report.healthy, doc
