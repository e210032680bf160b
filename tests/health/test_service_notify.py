"""The real AgentService speaking the real sd_notify protocol to a datagram socket standing in for
systemd: READY=1 only after start-up, WATCHDOG=1 at half of WATCHDOG_USEC, no more pings (and a
STATUS naming the stage) while the inference thread hangs, pings again once it recovers, STOPPING=1
on shutdown. /healthz answers 503 with the same reason while the stage hangs."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from agent.config.models import AgentConfig, CameraConfig, HealthConfig, MetricsConfig, MqttConfig
from agent.core.detections import PrefilterResult
from agent.prefilter.detector import YoloDetector
from agent.publish.local_broker import LocalMosquitto
from agent.runtime.service import AgentService
from tests.health.conftest import NotifyListener

WATCHDOG_USEC = 600_000  # WatchdogSec=0.6: pings due every 0.3 s
INFERENCE_WINDOW_S = 0.6


class HangablePrefilter:
    """The shipped detector, whose ``infer`` blocks once ``hang`` is set, until ``release`` is."""

    def __init__(self, inner: YoloDetector) -> None:
        self.inner = inner
        self.info = inner.info
        self.hang = threading.Event()
        self.release = threading.Event()
        self.hanging = threading.Event()
        self.calls: list[tuple[float, bool]] = []  # (monotonic time, was the frame blank)

    def infer(self, image: np.ndarray) -> PrefilterResult:
        self.calls.append((time.monotonic(), not image.any()))
        if self.hang.is_set():
            self.hanging.set()
            self.release.wait(30.0)
        return self.inner.infer(image)


@pytest.fixture(scope="module")
def detector() -> YoloDetector:
    from agent.config.models import DEFAULT_MODEL

    return YoloDetector.from_file(DEFAULT_MODEL)


@pytest.fixture
def service(mosquitto: LocalMosquitto, detector: YoloDetector, notify_socket: tuple[str, NotifyListener],
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AgentService, HangablePrefilter, NotifyListener]]:
    address, listener = notify_socket
    # set after the module's Mosquitto started: it would send its own READY=1 to an inherited socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    config = AgentConfig(
        device_id="box1", cameras=[CameraConfig(id="belt", source="synthetic://conveyor?seed=5&fps=10")],
        mqtt=MqttConfig(url=mosquitto.url, stats_interval_s=0), metrics=MetricsConfig(listen="127.0.0.1:0"),
        health=HealthConfig(inference_window_s=INFERENCE_WINDOW_S, status_interval_s=0.3))
    prefilter = HangablePrefilter(detector)
    svc = AgentService(config, prefilter=prefilter)
    try:
        yield svc, prefilter, listener
    finally:
        prefilter.release.set()
        svc.shutdown(timeout=5.0)


def healthz(svc: AgentService) -> tuple[int, dict[str, Any]]:
    assert svc.health is not None and svc.health.server is not None
    try:
        with urllib.request.urlopen(svc.health.server.url + "/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_ready_watchdog_stuck_recovery_stopping(
        service: tuple[AgentService, HangablePrefilter, NotifyListener]) -> None:
    svc, prefilter, listener = service
    started = time.monotonic()
    svc.start()

    # READY=1 once, after the warm-up inference on a blank frame and after the camera opened
    got = listener.wait_for(lambda m: m.get("READY") == "1", 10.0)
    assert got is not None, f"no READY=1; got {listener.messages}"
    ready_at, ready = got
    assert prefilter.calls and prefilter.calls[0][1] and prefilter.calls[0][0] < ready_at, \
        "the first inference is the warm-up on a blank frame, before READY"
    assert ready["STATUS"].startswith("ready: 1/1 cameras online; model conveyor-yolov8n@"), ready
    assert len(listener.times("READY", "1")) == 1
    assert not listener.times("WATCHDOG", "1", end=ready_at), "no watchdog ping before READY"
    assert started < ready_at

    # regular pings at half of WATCHDOG_USEC (0.3 s), never a gap as long as the timeout itself
    time.sleep(1.5)
    pings = listener.times("WATCHDOG", "1", start=ready_at)
    assert len(pings) >= 4, pings
    gaps = np.diff([ready_at, *pings])
    assert gaps.max() < WATCHDOG_USEC / 1e6, f"a gap of {gaps.max():.2f} s would have let the watchdog fire"
    assert any("cameras online" in s and "fps" in s for s in listener.statuses(ready_at)), listener.statuses()
    code, doc = healthz(svc)
    assert code == 200 and doc["status"] == "ok" and doc["ready"] is True, doc

    # the inference thread hangs inside the prefilter: the pings stop, STATUS says which stage
    prefilter.hang.set()
    assert prefilter.hanging.wait(5.0)
    hung_at = time.monotonic()
    stuck = listener.wait_for(lambda m: "STUCK" in m.get("STATUS", ""), 5.0, after=hung_at)
    assert stuck is not None, listener.statuses(hung_at)
    stuck_at, msg = stuck
    assert "inference stuck" in msg["STATUS"] and "inspecting a frame" in msg["STATUS"], msg
    assert stuck_at - hung_at < INFERENCE_WINDOW_S + 1.0
    code, doc = healthz(svc)
    assert code == 503 and doc["status"] == "unhealthy", doc
    assert any(p.startswith("inference stuck") for p in doc["problems"]), doc
    assert doc["stages"]["inference"]["state"] == "stuck"
    time.sleep(1.2)  # two watchdog timeouts: systemd would have killed it by now
    assert listener.times("WATCHDOG", "1", start=stuck_at) == [], "pings went on while a stage was stuck"
    last_ping = max(listener.times("WATCHDOG", "1"))
    assert last_ping - hung_at < INFERENCE_WINDOW_S + 0.5, "the pings went on long after the window"

    # the stage recovers before systemd acted: the pings resume
    prefilter.release.set()
    prefilter.hang.clear()
    released_at = time.monotonic()
    assert listener.wait_for(lambda m: m.get("WATCHDOG") == "1", 3.0, after=released_at)
    assert healthz(svc)[0] == 200

    # shutdown: STOPPING=1 with a status line
    stop_at = time.monotonic()
    svc.shutdown(timeout=5.0)
    stopping = listener.wait_for(lambda m: m.get("STOPPING") == "1", 3.0, after=stop_at)
    assert stopping is not None and stopping[1]["STATUS"].startswith("stopping")
    assert listener.times("WATCHDOG", "1", start=stopping[0]) == []


def test_ready_waits_for_cameras_but_not_for_a_dead_one(
        service: tuple[AgentService, HangablePrefilter, NotifyListener], mosquitto: LocalMosquitto) -> None:
    """A live camera that cannot be opened does not hold READY back for ever: after its first failed
    attempt the agent is ready (inspecting the others), and STATUS/healthz name the missing camera."""
    svc, _prefilter, listener = service
    bad = CameraConfig(id="door", source="rtsp://127.0.0.1:9/nothing-listens-here", reconnect_initial_s=5.0)
    svc.config = svc.config.model_copy(update={"cameras": [*svc.config.cameras, bad]})
    svc.start()
    got = listener.wait_for(lambda m: m.get("READY") == "1", 15.0)
    assert got is not None, listener.messages
    assert "1/2 cameras online (door reconnecting)" in got[1]["STATUS"], got
    code, doc = healthz(svc)
    assert code == 200 and doc["cameras"]["door"]["state"] == "reconnecting", doc  # retrying is doing its job
    assert doc["stages"]["camera door"]["state"] == "running"
