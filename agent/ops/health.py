"""The agent's health: its stages' progress, readiness, STATUS line, ``/healthz`` document, and the
:class:`AgentHealth` that runs the supervisor thread and the metrics endpoint. It reads the snapshots the
runtime produces (:mod:`agent.ops.snapshot`), never the service.

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

import logging
import time
from collections.abc import Callable
from typing import Any

from agent.config.models import HealthConfig, MetricsConfig
from agent.errors import MetricsError
from agent.escalation.sampler import FATES
from agent.ops.endpoint import MetricsServer
from agent.ops.metrics import render_agent_metrics
from agent.ops.notify import Notifier
from agent.ops.snapshot import AgentSnapshot, Progress
from agent.ops.stages import HealthReport, StageProgress, StageState, evaluate
from agent.ops.supervisor import Supervisor

__all__ = ["AgentHealth", "agent_stages"]

log = logging.getLogger(__name__)

_OPENING = ("new", "connecting")


def agent_stages(progress: Progress, cfg: HealthConfig) -> list[StageProgress]:
    stages: list[StageProgress] = []
    loop, publish = progress.loop, progress.publish
    if loop is not None:
        if not loop.finished:
            publishing = publish is not None and publish.commit_busy_since is not None
            stages.append(StageProgress("inference", "running", loop.last_progress, cfg.inference_window_s,
                                        doing="committing an event to the outbox" if publishing
                                        else "inspecting a frame"))
        elif loop.error is not None:
            stages.append(StageProgress("inference", "dead", None, cfg.inference_window_s,
                                        reason=f"the inference thread ended: {loop.error!r}"))
        else:
            stages.append(StageProgress("inference", "idle", None, cfg.inference_window_s, reason="all sources ended"))
    for cam in progress.cameras:
        name = f"camera {cam.stats.camera_id}"
        if cam.alive:
            stages.append(StageProgress(name, "running", cam.busy_since, cfg.capture_window_s, doing=cam.busy_doing))
        else:
            state: StageState = "failed" if cam.stats.state == "failed" else "idle"
            stages.append(StageProgress(name, state, None, cfg.capture_window_s,
                                        reason=(cam.stats.last_error or "") if state == "failed" else ""))
    if publish is not None:
        stages.append(StageProgress("outbox commit", "running", publish.commit_busy_since, cfg.publish_window_s,
                                    doing="committing an event"))
        if publish.forwarder_alive:
            stages.append(StageProgress("outbox forwarder", "running", publish.forwarder_progress,
                                        cfg.publish_window_s, doing="sending outbox rows"))
        else:
            stages.append(StageProgress("outbox forwarder", "dead", None, cfg.publish_window_s,
                                        reason="the outbox forwarder thread ended (see the log); events stay "
                                        "in the outbox until a restart"))
    return stages


class AgentHealth:
    """Supervisor (sd_notify) and metrics endpoint of one agent. ``progress`` and ``snapshot`` are the
    runtime's (``AgentService.progress``/``snapshot``): the stages' progress alone, and everything."""

    def __init__(self, progress: Callable[[], Progress], snapshot: Callable[[], AgentSnapshot],
                 cfg: HealthConfig, metrics: MetricsConfig, notifier: Notifier) -> None:
        self._progress = progress
        self._snapshot = snapshot
        self.notifier = notifier
        self.cfg = cfg
        self._metrics_cfg = metrics
        self.supervisor = Supervisor(notifier, readiness=self.readiness, report=self.report, status=self.status_line,
                                     status_interval_s=self.cfg.status_interval_s)
        self.server: MetricsServer | None = None
        self._fps_mark: tuple[float, int] | None = None
        self.reload_note: str | None = None  # the last reload's outcome, shown in STATUS= until the next one

    @property
    def ready(self) -> bool:
        return self.supervisor.is_ready()

    def start_endpoint(self) -> None:
        """Serve /metrics and /healthz if ``metrics.enabled``. An address in use is logged as an error and
        the agent goes on without them: inspection matters more than its metrics."""
        mcfg = self._metrics_cfg
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
        self.supervisor.if_ready(lambda: self.notifier.reloading())

    def reloaded(self, note: str) -> None:
        """``READY=1`` after ``RELOADING=1``, whether the reload was applied or refused; ``note`` (what it did)
        stays in the STATUS= line until the next reload."""
        self.reload_note = note
        self.supervisor.if_ready(lambda: self.notifier.ready(self.status_line()))

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.notifier.close()

    # -- what the supervisor and the endpoint ask ----------------------------------------------

    def report(self, progress: Progress | None = None) -> HealthReport:
        return evaluate(agent_stages(progress or self._progress(), self.cfg), time.monotonic())

    def readiness(self) -> tuple[bool, str]:
        progress = self._progress()
        waiting = [c.stats.camera_id for c in progress.cameras if c.stats.state in _OPENING]
        if waiting:
            return False, f"starting: opening camera{'s' if len(waiting) > 1 else ''} {', '.join(waiting)}"
        self._fps_mark = (time.monotonic(), _inspected(progress))
        return True, "ready: " + self._startup_line(self._snapshot())

    @staticmethod
    def _startup_line(s: AgentSnapshot) -> str:
        cameras = [c.stats for c in s.progress.cameras]
        online = [c.camera_id for c in cameras if c.state == "online"]
        other = [f"{c.camera_id} {c.state}" for c in cameras if c.state != "online"]
        cams = f"{len(online)}/{len(cameras)} cameras online"
        if other:
            cams += f" ({', '.join(other)})"
        facts = s.model
        model = (f"model {facts.model_id} warmed up in {facts.warm_up_ms:.0f} ms" if facts
                 else "no model (learn mode)" if not s.needs_model else "model loaded")
        return f"{cams}; {model}; {_mqtt_words(s)}"

    def status_line(self) -> str:
        """``2/2 cameras online, 14.9 fps; pass 1200 defect 31 uncertain 80; outbox 0; MQTT connected``."""
        s = self._snapshot()
        total = _inspected(s.progress)
        now = time.monotonic()
        fps = 0.0
        if self._fps_mark is not None and now > self._fps_mark[0]:
            fps = (total - self._fps_mark[1]) / (now - self._fps_mark[0])
        self._fps_mark = (now, total)
        online = sum(1 for c in s.progress.cameras if c.stats.state == "online")
        verdicts = s.events.verdicts()  # every published event, whichever thread published it
        outbox = f"outbox {s.publisher.pending}" if s.publisher is not None else "outbox ?"
        if s.publisher is not None and s.publisher.evicted:
            outbox += f" ({s.publisher.evicted} evicted)"
        return (f"{online}/{len(s.progress.cameras)} cameras online, {fps:.1f} fps; "
                + " ".join(f"{v} {verdicts.get(v, 0)}" for v in ("pass", "defect", "uncertain"))
                + _learn_words(s.learn) + _image_words(s)
                + f"; {outbox}; {_mqtt_words(s)}" + (f"; {self.reload_note}" if self.reload_note else ""))

    def metrics_text(self) -> str:
        s = self._snapshot()
        return render_agent_metrics(s, self.report(s.progress), self.ready)

    def health_document(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, the JSON document of ``/healthz``)."""
        s = self._snapshot()
        report = self.report(s.progress)
        ready = self.ready
        status = "starting" if not ready else "ok" if report.healthy else "unhealthy"
        pub = s.publisher
        doc: dict[str, Any] = {
            "status": status,
            "ready": ready,
            "problems": list(report.problems) if ready else [self.readiness()[1], *report.problems],
            "device": s.device_id,
            "uptime_s": round(s.uptime_s, 1),
            "stages": report.as_dict(),
            "cameras": {st.camera_id: {"state": st.state, "frames_read": st.frames_read, "dropped": st.dropped,
                                       "reconnects": st.reconnects, "last_error": st.last_error}
                        for st in (c.stats for c in s.progress.cameras)},
            "inspected": _inspected(s.progress),
            "learn": s.learn,  # learn mode: every frame's fate per learning camera
            "mqtt": {"connected": pub.connected if pub is not None else False,
                     "last_error": pub.last_error if pub is not None else None},
            "outbox": {"pending": pub.pending if pub is not None else None,
                       "evicted": pub.evicted if pub is not None else None},
            "last_reload": self.reload_note,
        }
        if s.images is not None:  # a full disk is reported here, not fatal: inspection and publishing go on
            doc["images"] = {"disk_full": s.images.space_problem is not None, "problem": s.images.space_problem,
                             "stored": sum(s.images.images.values()), "bytes": sum(s.images.bytes.values()),
                             "queued": s.images.queued, "dropped": s.images.dropped, "failed": s.images.failed}
        if s.model is not None:
            f = s.model
            doc["model"] = {"id": f.model_id, "precision": f.precision, "gate": f.gate, "providers": list(f.providers)}
        return ready and report.healthy, doc


def _inspected(progress: Progress) -> int:
    return sum(progress.loop.inspected.values()) if progress.loop is not None else 0


def _mqtt_words(s: AgentSnapshot) -> str:
    if s.publisher is None:
        return "no publisher"
    if s.publisher.connected:
        return "MQTT connected"
    return "MQTT not connected (events wait in the outbox)"


def _image_words(s: AgentSnapshot) -> str:
    """``; images: disk full (...)`` while audit images cannot be written for lack of space, else nothing."""
    if s.images is None or s.images.space_problem is None:
        return ""
    return f"; images: not kept, disk full ({s.images.space_problem})"


def _learn_words(counts: dict[str, dict[str, int]]) -> str:
    """``; learn: 12 of 340 frames sent to the VLM`` while a camera is in learn mode, else nothing."""
    if not counts:
        return ""
    taken = sum(n for c in counts.values() for k, n in c.items() if k in FATES)
    sent = sum(c["sampled_schedule"] + c["sampled_scene_change"] for c in counts.values())
    return f"; learn: {sent} of {taken} frames sent to the VLM"
