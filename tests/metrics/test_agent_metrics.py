"""Scrape /metrics and /healthz of a running agent (a real video file, the shipped model, a real
Mosquitto) and check names, labels and values; prometheus_client's parser checks the text format."""

from __future__ import annotations

import json
import pathlib
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config.models import AgentConfig, CameraConfig, MetricsConfig, MqttConfig
from agent.ops.metrics import METRICS
from agent.publish.local_broker import LocalMosquitto
from agent.runtime.service import AgentService
from tests.conftest import VIDEO_FRAMES


def scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.headers["Content-Type"], reply.read().decode("utf-8")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample, by (name, labels), parsed by prometheus_client (it raises on a malformed line)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return parsed[(name, frozenset(labels.items()))]


def test_metrics_of_a_run_over_a_video_file(mosquitto: LocalMosquitto, video_file: pathlib.Path) -> None:
    config = AgentConfig(device_id="box1", cameras=[CameraConfig(id="file1", source=str(video_file), fps=240)],
                         mqtt=MqttConfig(url=mosquitto.url, stats_interval_s=0),
                         metrics=MetricsConfig(listen="127.0.0.1:0"))
    service = AgentService(config)
    service.start()
    try:
        assert service.health is not None and service.health.server is not None
        base = service.health.server.url
        assert service.publisher.wait_connected(10.0)
        service.wait(threading.Event(), duration=60.0)
        assert service.loop is not None and service.loop.finished
        assert service.publisher.flush(10.0)

        content_type, text = scrape(base + "/metrics")
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        parsed = samples(text)
        names = {family.name for family in text_string_to_metric_families(text)}
        # every documented family is exposed (the parser drops counters' _total from family names), then
        # prometheus_client's standard process and Python metrics, and nothing else
        ours = {n.removesuffix("_total") for n in METRICS}
        assert ours <= names and "process_resident_memory_bytes" in names
        assert all(n.startswith(("process_", "python_")) for n in names - ours), sorted(names - ours)

        assert value(parsed, "edge_agent_frames_read_total", camera="file1") == VIDEO_FRAMES
        assert value(parsed, "edge_agent_frames_inspected_total", camera="file1") == VIDEO_FRAMES
        assert value(parsed, "edge_agent_frames_dropped_total", camera="file1", reason="stale") == 0
        assert value(parsed, "edge_agent_frames_dropped_total", camera="file1", reason="fps_limit") == 0
        assert value(parsed, "edge_agent_frames_corrupt_total", camera="file1") == 0
        assert value(parsed, "edge_agent_camera_reconnects_total", camera="file1") == 0
        assert value(parsed, "edge_agent_camera_state", camera="file1", state="ended") == 1
        assert value(parsed, "edge_agent_camera_state", camera="file1", state="online") == 0

        events = {dict(k[1])["verdict"]: v for k, v in parsed.items() if k[0] == "edge_agent_events_total"}
        assert sum(events.values()) == VIDEO_FRAMES and set(events) <= {"pass", "defect", "uncertain"}
        assert all(dict(k[1])["decided_by"] == "prefilter" for k in parsed if k[0] == "edge_agent_events_total")
        escalations = {dict(k[1])["status"]: v for k, v in parsed.items() if k[0] == "edge_agent_escalations_total"}
        assert sum(escalations.values()) == VIDEO_FRAMES
        assert escalations.get("unavailable", 0) == events.get("uncertain", 0)  # no gateway configured

        # histograms: one prefilter and one publish observation per frame, cumulative buckets, +Inf = count
        for stage in ("prefilter", "publish"):
            count = value(parsed, "edge_agent_stage_duration_seconds_count", stage=stage)
            assert count == VIDEO_FRAMES
            assert value(parsed, "edge_agent_stage_duration_seconds_bucket", stage=stage, le="+Inf") == count
            assert 0 < value(parsed, "edge_agent_stage_duration_seconds_sum", stage=stage) < 60
            buckets = sorted((float(dict(k[1])["le"]), v) for k, v in parsed.items()
                             if k[0] == "edge_agent_stage_duration_seconds_bucket" and dict(k[1])["stage"] == stage)
            assert [v for _, v in buckets] == sorted(v for _, v in buckets)
        assert value(parsed, "edge_agent_stage_duration_seconds_count", stage="escalation") == 0

        assert value(parsed, "edge_agent_outbox_committed_total") == VIDEO_FRAMES
        assert value(parsed, "edge_agent_outbox_acked_total") == VIDEO_FRAMES
        assert value(parsed, "edge_agent_outbox_pending_events") == 0
        assert value(parsed, "edge_agent_outbox_evicted_total") == 0
        assert value(parsed, "edge_agent_mqtt_connected") == 1
        assert value(parsed, "edge_agent_mqtt_connects_total") == 1
        info = next(dict(k[1]) for k in parsed if k[0] == "edge_agent_model_info")
        assert info["model"].startswith("conveyor-yolov8n.int8@") and info["precision"] == "int8"
        assert info["gate"] == "passed" and info["task"] == "detect" and info["providers"] == "CPUExecutionProvider"
        assert value(parsed, "edge_agent_ready") == 1 and value(parsed, "edge_agent_healthy") == 1

        with urllib.request.urlopen(base + "/healthz", timeout=5) as reply:
            assert reply.status == 200
            doc: dict[str, Any] = json.loads(reply.read())
        assert doc["status"] == "ok" and doc["problems"] == [] and doc["inspected"] == VIDEO_FRAMES
        assert doc["stages"]["inference"] == {"state": "idle", "busy_s": 0.0, "window_s": 20.0,
                                              "reason": "all sources ended"}
        assert doc["cameras"]["file1"]["state"] == "ended" and doc["mqtt"]["connected"] is True

        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/nothing", timeout=5)
        missing.value.close()
        assert missing.value.code == 404
    finally:
        service.shutdown(timeout=5.0)


def test_healthz_is_503_and_names_a_camera_that_failed_for_good(
        mosquitto: LocalMosquitto, tmp_path: pathlib.Path) -> None:
    """A video file that cannot be opened fails for good: /healthz says so (503), while the other camera runs."""
    config = AgentConfig(device_id="box1", cameras=[
        CameraConfig(id="belt", source="synthetic://conveyor?seed=2&fps=10"),
        CameraConfig(id="gone", source=str(tmp_path / "gone.avi"))],
        mqtt=MqttConfig(url=mosquitto.url, stats_interval_s=0), metrics=MetricsConfig(listen="127.0.0.1:0"))
    service = AgentService(config)
    service.start()
    try:
        assert service.health is not None and service.health.server is not None
        assert service.health.supervisor.ready.wait(10.0)
        # ready comes with the first inspected frame (the belt's); the gone camera's grabber may not have tried its
        # file yet (seen once in CI): /healthz turns 503 when it has
        deadline = time.monotonic() + 10.0
        while True:
            try:
                urllib.request.urlopen(service.health.server.url + "/healthz", timeout=5).close()
            except urllib.error.HTTPError as exc:
                failed = exc
                break
            assert time.monotonic() < deadline, "/healthz stayed 200 with a camera whose file does not exist"
            time.sleep(0.05)
        assert failed.code == 503
        doc = json.loads(failed.read())
        failed.close()
        assert doc["status"] == "unhealthy" and doc["stages"]["camera gone"]["state"] == "failed"
        assert any(p.startswith("camera gone failed: ") for p in doc["problems"]), doc
        assert doc["stages"]["camera belt"]["state"] == "running"
        parsed = samples(scrape(service.health.server.url + "/metrics")[1])
        assert value(parsed, "edge_agent_healthy") == 0
        assert value(parsed, "edge_agent_camera_state", camera="gone", state="failed") == 1
    finally:
        service.shutdown(timeout=5.0)


def test_a_busy_metrics_port_is_logged_and_the_agent_runs_on(
        mosquitto: LocalMosquitto, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = AgentConfig(device_id="box1", cameras=[CameraConfig(
            id="belt", source="synthetic://conveyor?seed=2&fps=0&frames=3")], mqtt=MqttConfig(url=mosquitto.url),
            metrics=MetricsConfig(listen=f"127.0.0.1:{port}"))
        service = AgentService(config)
        service.start()
        try:
            assert service.health is not None and service.health.server is None
            service.wait(threading.Event(), duration=30.0)
            assert service.loop is not None and service.loop.finished
        finally:
            summary = service.shutdown(timeout=5.0)
    assert summary.inspected == {"belt": 3}
    assert any(f"metrics.listen 127.0.0.1:{port}: cannot listen" in r.getMessage() for r in caplog.records)
