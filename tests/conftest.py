"""Shared fixtures: a clean environment, a real Mosquitto broker, an MQTT collector,
a tag event builder, real video files of the conveyor scene, and a real RTSP camera."""

from __future__ import annotations

import datetime
import os
import pathlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.capture.synthetic import ConveyorScene, SceneSettings
from agent.config.models import TriageConfig
from agent.core.detections import Detection
from agent.core.event import EscalationOutcome, TagEvent, build_event
from agent.core.frame import FrameTruth
from agent.publish.local_broker import LocalMosquitto, free_port
from agent.triage.policy import triage


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No EDGE_AGENT_* variable (nor systemd's NOTIFY_SOCKET/WATCHDOG_*) from the developer's shell leaks into a
    test, and each test (and every process it starts) keeps its state (the outbox) in a fresh directory."""
    for name in list(os.environ):
        if name.startswith("EDGE_AGENT_") or name in ("CREDENTIALS_DIRECTORY", "XDG_STATE_HOME", "NOTIFY_SOCKET",
                                                      "WATCHDOG_USEC", "WATCHDOG_PID"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[LocalMosquitto]:
    """A real Mosquitto on a free loopback port, one per test module.

    No skip when mosquitto is missing: the BrokerError says how to install it.
    Tests that stop or restart a broker make their own LocalMosquitto.
    """
    with LocalMosquitto() as broker:
        yield broker


# -- a subscriber that records what the broker delivers -------------------------------------


class MqttCollector:
    """A paho MQTT v5 subscriber in its own network thread that records messages."""

    def __init__(
        self,
        url_or_port: str | int,
        topic: str,
        *,
        client_id: str = "",
        session_expiry_s: int | None = None,
    ) -> None:
        self.port = url_or_port if isinstance(url_or_port, int) else int(str(url_or_port).rsplit(":", 1)[1])
        self.topic = topic
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._session_expiry_s = session_expiry_s
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def start(self, timeout: float = 5.0) -> MqttCollector:
        props = None
        clean_start = True
        if self._session_expiry_s is not None:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self._session_expiry_s
            clean_start = False
        self.client.connect("127.0.0.1", self.port, keepalive=30, clean_start=clean_start, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise TimeoutError(f"no SUBACK for {self.topic} within {timeout} s")
        return self

    def wait_for(self, n: int, timeout: float = 5.0) -> list[mqtt.MQTTMessage]:
        """The first ``n`` messages; fewer if they did not come within ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= n, timeout)
            return list(self.messages[:n]) if len(self.messages) >= n else list(self.messages)

    def wait_until(self, predicate: Callable[[mqtt.MQTTMessage], bool], timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(predicate(m) for m in self.messages), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector() -> Iterator[Callable[..., MqttCollector]]:
    """Factory: ``collector(broker.url, "edge/+/+/tags")`` returns a started MqttCollector,
    closed at the end of the test."""
    made: list[MqttCollector] = []

    def make(url_or_port: str | int, topic: str, **kwargs: Any) -> MqttCollector:
        c = MqttCollector(url_or_port, topic, **kwargs).start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# -- tag events ------------------------------------------------------------------------------

_DETECTIONS = {
    # verdict -> detections that triage (accept 0.6, reject 0.25) turns into it
    "pass": [Detection("scratch", 0, 0.1, (1.0, 2.0, 3.0, 4.0))],  # below reject: dropped
    "defect": [
        Detection("scratch", 0, 0.91234, (10.04, 20.0, 110.0, 220.55)),  # accepted
        Detection("dent", 1, 0.4, (300.0, 40.0, 350.0, 90.0)),  # uncertain, kept
    ],
    "uncertain": [Detection("dent", 1, 0.42, (300.0, 40.0, 350.0, 90.0))],
}


def make_event(
    *,
    device: str = "dev1",
    camera: str = "cam1",
    sequence: int = 1,
    verdict: str = "defect",
    escalation: EscalationOutcome | None = None,
) -> TagEvent:
    decision = triage(_DETECTIONS[verdict], TriageConfig())
    return build_event(
        device=device,
        camera=camera,
        sequence=sequence,
        captured_at=datetime.datetime.now(datetime.timezone.utc),
        frame_width=640,
        frame_height=480,
        decision=decision,
        model_id="conveyor-yolov8n-int8@0123abcd",
        prefilter_latency_ms=12.3456,
        escalation=escalation,
    )


@pytest.fixture
def event_factory() -> Callable[..., TagEvent]:
    """``event_factory(device=, camera=, sequence=, verdict="pass"|"defect"|"uncertain", escalation=)``."""
    return make_event


# -- real video files ------------------------------------------------------------------------

VIDEO_FRAMES = 40
VIDEO_SIZE = (320, 240)  # width, height: small, so writing and decoding are quick


@pytest.fixture(scope="session")
def scene_frames() -> list[tuple[np.ndarray, FrameTruth]]:
    """The frames written into :func:`video_file`, in order, with their truth."""
    scene = ConveyorScene(seed=3, settings=SceneSettings(width=VIDEO_SIZE[0], height=VIDEO_SIZE[1]))
    return [scene.next_frame() for _ in range(VIDEO_FRAMES)]


@pytest.fixture(scope="session")
def video_file(tmp_path_factory: pytest.TempPathFactory,
               scene_frames: list[tuple[np.ndarray, FrameTruth]]) -> pathlib.Path:
    """A real 40-frame MJPG .avi of the conveyor scene at 15 fps."""
    path = tmp_path_factory.mktemp("video") / "conveyor.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, VIDEO_SIZE)
    if not writer.isOpened():
        pytest.fail("OpenCV cannot write MJPG .avi files here")
    for image, _truth in scene_frames:
        writer.write(image)
    writer.release()
    return path


@pytest.fixture
def corrupt_video(tmp_path: pathlib.Path, video_file: pathlib.Path) -> pathlib.Path:
    """:func:`video_file` with a fifth of its bytes, from one third in, overwritten by
    seeded garbage: the container index at the end survives, the frames there do not."""
    path = tmp_path / "corrupt.avi"
    shutil.copyfile(video_file, path)
    data = bytearray(path.read_bytes())
    start, length = len(data) // 3, len(data) // 5
    data[start:start + length] = np.random.default_rng(7).integers(0, 256, length, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="session")
def quantized_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The shipped detector quantized (cpu flavour) with 8 synthetic calibration frames: a real INT8
    model for tests, quick to make, without a gate record."""
    from agent.capture.synthetic import render_still
    from agent.config.models import DEFAULT_MODEL
    from agent.prefilter.detector import YoloDetector
    from agent.tooling.quantize.int8 import FLAVOURS, quantize_model

    fp32 = YoloDetector.from_file(DEFAULT_MODEL)
    rng = np.random.default_rng(1234)
    tensors = (fp32.preprocess(render_still(rng)[0])[0].copy() for _ in range(8))
    out = tmp_path_factory.mktemp("int8") / "conveyor-yolov8n.int8.onnx"
    quantize_model(DEFAULT_MODEL, out, FLAVOURS["cpu"], fp32.info.input_name, tensors, 8)
    return out


# -- a real RTSP camera (GStreamer's RTSP server, run by the system Python) -------------------

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER = pathlib.Path(__file__).parent / "capture" / "rtsp_server.py"
RTSP_PACKAGES = ("gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base "
                 "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly")


class RtspServer:
    """tests/capture/rtsp_server.py in a subprocess of the system Python (``codec``: h264 or mjpeg)."""

    def __init__(self, port: int, log: pathlib.Path, width: int = 320, height: int = 240,
                 codec: str = "h264") -> None:
        self.port = port
        self.width, self.height = width, height
        self.codec = codec
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(RTSP_SERVER), "--port", str(self.port),
                 "--width", str(self.width), "--height", str(self.height), "--codec", self.codec],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                output = self._log.read_text(errors="replace")
                if self._proc.returncode == 3:
                    pytest.skip(f"RTSP server cannot run ({output.strip()}); install: apt-get install -y "
                                f"{RTSP_PACKAGES}")
                raise RuntimeError(f"RTSP server exited with {self._proc.returncode}: {output}")
            if self._answers_options():
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"RTSP server did not answer on port {self.port} within {timeout} s")

    def _answers_options(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as conn:
                conn.sendall(f"OPTIONS {self.url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
                return conn.recv(64).startswith(b"RTSP/1.0 200")
        except OSError:
            return False

    def kill(self) -> None:
        """Kill the server abruptly, like a camera losing power."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _rtsp_available() -> str | None:
    """None when the system Python can run the RTSP server, else why not."""
    if not pathlib.Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    check = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "missing = [e for e in ('videotestsrc', 'x264enc', 'rtph264pay') "
             "if not Gst.ElementFactory.find(e)]; "
             "raise SystemExit(' '.join(missing) or None)")
    result = subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or [""])[-1] or result.stdout.strip()
        return f"system Python cannot run GStreamer's RTSP server ({detail or 'missing elements'})"
    return None


@pytest.fixture(scope="session")
def rtsp_support() -> None:
    reason = _rtsp_available()
    if reason is not None:
        pytest.skip(f"{reason}; install: apt-get install -y {RTSP_PACKAGES}")


@pytest.fixture
def rtsp_server(rtsp_support: None, tmp_path: pathlib.Path) -> Iterator[RtspServer]:
    """A running RTSP camera at ``rtsp_server.url`` (320x240, 15 fps H.264)."""
    server = RtspServer(free_port(), tmp_path / "rtsp-server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()
