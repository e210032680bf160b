"""Health, the STATUS line, /healthz and /metrics read the runtime's snapshots, never the service: built here by
hand, with no service, no threads and no broker."""

from __future__ import annotations

import time

from agent.capture.grabber import GrabberStats
from agent.config.models import HealthConfig, MetricsConfig
from agent.core.ports import ReliableStats
from agent.ops.health import AgentHealth
from agent.ops.histogram import HistogramSnapshot
from agent.ops.notify import Notifier
from agent.ops.snapshot import (
    AgentSnapshot,
    CameraProgress,
    EventCounts,
    LoopProgress,
    Progress,
    PublishProgress,
)
from agent.prefilter.warmup import ModelFacts


def camera(camera_id: str, state: str, *, alive: bool = True, busy_since: float | None = None) -> CameraProgress:
    stats = GrabberStats(camera_id=camera_id, frames_read=120, delivered=100, dropped=20, skipped_fps=5, corrupt=1,
                         reconnects=2, state=state, last_error=None if state != "failed" else "gave up")
    return CameraProgress(stats, alive, busy_since, "reading a frame" if busy_since is not None else "")


def snapshot(progress: Progress) -> AgentSnapshot:
    publisher = ReliableStats(committed=10, acked=8, evicted=1, evicted_total=1, redelivered=0, resent=0, refused=0,
                              pending=2, pending_bytes=900, inflight=2, connected=True, last_error=None)
    latency = HistogramSnapshot(bounds=(0.01, 0.1), cumulative=(3, 4), sum=0.12, count=4)
    events = EventCounts(events={("belt", "pass", "prefilter"): 7, ("belt", "uncertain", "vlm"): 3}, updates={},
                         escalations={"not_needed": 7, "answered": 3}, latency={"publish": latency})
    model = ModelFacts("detector@0123", "detect", "int8", "passed", ("CPUExecutionProvider",), 12.0)
    return AgentSnapshot(device_id="box1", needs_model=True, uptime_s=61.25, model=model, progress=progress,
                         events=events, publisher=publisher, mqtt_connects=1, dataset=None, learn={})


def health_of(progress: Progress) -> AgentHealth:
    return AgentHealth(lambda: progress, lambda: snapshot(progress), HealthConfig(inference_window_s=5.0),
                       MetricsConfig(enabled=False), Notifier(None))


def test_a_healthy_snapshot_reads_as_healthy_everywhere() -> None:
    now = time.monotonic()
    progress = Progress((camera("belt", "online"),), LoopProgress(False, None, now, {"belt": 10}),
                        PublishProgress(None, True, now))
    health = health_of(progress)
    assert health.report().healthy
    assert health.readiness() == (True, "ready: 1/1 cameras online; model detector@0123 warmed up in 12 ms; "
                                        "MQTT connected")
    line = health.status_line()
    assert line.startswith("1/1 cameras online, ") and "pass 7 defect 0 uncertain 3; outbox 2 (1 evicted); " \
        "MQTT connected" in line, line
    healthy, doc = health.health_document()
    assert not healthy and doc["status"] == "starting"  # the supervisor has not said READY=1
    assert doc["inspected"] == 10 and doc["outbox"] == {"pending": 2, "evicted": 1}
    assert doc["cameras"]["belt"]["frames_read"] == 120 and doc["model"]["precision"] == "int8"
    text = health.metrics_text()
    assert 'edge_agent_events_total{camera="belt",decided_by="vlm",verdict="uncertain"} 3.0' in text
    assert 'edge_agent_frames_inspected_total{camera="belt"} 10.0' in text
    assert "edge_agent_mqtt_connects_total 1.0" in text


def test_a_stuck_stage_in_the_snapshot_makes_the_report_unhealthy() -> None:
    now = time.monotonic()
    stuck = Progress((camera("belt", "online"),), LoopProgress(False, None, now - 60.0, {"belt": 10}),
                     PublishProgress(None, True, now))  # no frame for a minute, window 5 s
    report = health_of(stuck).report()
    assert not report.healthy and any("inference" in p for p in report.problems), report.problems
    dead = Progress((camera("belt", "failed", alive=False),), LoopProgress(True, RuntimeError("boom"), now, {}),
                    PublishProgress(None, False, now))
    problems = " ".join(health_of(dead).report().problems)
    assert "boom" in problems and "forwarder" in problems and "gave up" in problems, problems


def test_the_readiness_waits_for_the_cameras_being_opened() -> None:
    progress = Progress((camera("belt", "connecting"), camera("dock", "new")), None, None)
    assert health_of(progress).readiness() == (False, "starting: opening cameras belt, dock")
