"""Snapshots: the annotated JPEG itself, and end to end on the snapshot topic."""

from __future__ import annotations

import json
import pathlib
import threading
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from agent.config.models import (
    AgentConfig,
    CameraConfig,
    MqttConfig,
    OutboxConfig,
    SnapshotConfig,
    TriageConfig,
)
from agent.core.detections import Detection
from agent.publish.local_broker import LocalMosquitto
from agent.publish.snapshot import SnapshotSender, render_snapshot
from agent.runtime.service import AgentService
from agent.triage.policy import triage
from tests.conftest import MqttCollector

DECISION = triage([Detection("scratch", 0, 0.9, (100.0, 100.0, 200.0, 160.0)),
                   Detection("hole", 1, 0.4, (400.0, 300.0, 440.0, 340.0))], TriageConfig())


def noisy(h: int = 480, w: int = 640) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_snapshot_is_a_jpeg_with_the_boxes_drawn() -> None:
    image = np.full((480, 640, 3), 128, np.uint8)
    jpeg = render_snapshot(image, DECISION, max_width=640, quality=90, max_bytes=500_000)
    assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
    pic = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert pic.shape == (480, 640, 3)
    b, g, r = (int(v) for v in pic[130, 100])  # left edge of the accepted box: red
    assert r > 180 and b < 90 and g < 90
    b, g, r = (int(v) for v in pic[320, 400])  # left edge of the uncertain box: amber
    assert r > 200 and g > 140 and b < 90
    assert int(pic[20, 20].mean()) in range(118, 139)  # untouched elsewhere


def test_snapshot_of_a_classifier_decision_labels_the_frame() -> None:
    from agent.triage.policy import triage_classification

    decision = triage_classification((("pass", 0.45), ("scratch", 0.3), ("hole", 0.25)), TriageConfig())
    assert decision.verdict == "uncertain" and all(t.detection.box is None for t in decision.tags)
    image = np.full((480, 640, 3), 60, np.uint8)
    jpeg = render_snapshot(image, decision, max_width=640, quality=90, max_bytes=200_000)
    assert jpeg is not None
    drawn = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    # two amber label banners stacked at the top left; the rest of the frame untouched
    assert drawn[2:30, :40].mean() > 100 and abs(float(drawn[200:, 200:].mean()) - 60) < 3


def test_snapshot_is_scaled_down_and_fits_the_byte_cap() -> None:
    jpeg = render_snapshot(noisy(960, 1280), DECISION, max_width=320, quality=95, max_bytes=40_000)
    assert jpeg is not None and len(jpeg) <= 40_000
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)


def test_snapshot_too_large_even_at_low_quality_gives_none() -> None:
    assert render_snapshot(noisy(), DECISION, max_width=640, quality=80, max_bytes=2_000) is None


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[str, str, int, bool]] = []

    def publish_snapshot(self, camera: str, event_id: str, jpeg: bytes, durable: bool) -> bool:
        self.got.append((camera, event_id, len(jpeg), durable))
        return True


@pytest.mark.parametrize(
    ("verdicts", "sent"),
    [(["defect", "uncertain"], 1), (["pass"], 0), ([], 0)],  # DECISION's verdict is defect
)
def test_sender_only_sends_the_configured_verdicts(verdicts: list[str], sent: int) -> None:
    sink = Sink()
    sender = SnapshotSender(SnapshotConfig(enabled=True, verdicts=verdicts), sink)  # type: ignore[arg-type]
    sender.send("cam", "e1", noisy(), DECISION)
    assert len(sink.got) == sent == sender.counters.sent


def test_sender_counts_snapshots_too_large(caplog: pytest.LogCaptureFixture) -> None:
    sender = SnapshotSender(SnapshotConfig(enabled=True, max_bytes=1024), Sink())
    sender.send("cam", "e1", noisy(), DECISION)
    assert sender.counters.too_large == 1 and "larger than snapshots.max_bytes=1024" in caplog.text


@pytest.mark.parametrize("durable", [False, True])
def test_service_publishes_snapshots_tied_to_their_events(tmp_path: pathlib.Path, mosquitto: LocalMosquitto,
                                                          collector: Callable[..., MqttCollector],
                                                          durable: bool) -> None:
    tags = collector(mosquitto.url, "edge/snap-box/+/tags")
    snaps = collector(mosquitto.url, "edge/snap-box/+/snapshot")
    cfg = AgentConfig(
        device_id="snap-box", cameras=[CameraConfig(id="belt", source="synthetic://conveyor?fps=0&frames=5")],
        mqtt=MqttConfig(url=mosquitto.url), outbox=OutboxConfig(path=tmp_path / "o.sqlite"),
        snapshots=SnapshotConfig(enabled=True, verdicts=["pass", "defect", "uncertain"], store_in_outbox=durable))
    service = AgentService(cfg)
    service.start()
    assert service.publisher.wait_connected(10)
    service.wait(threading.Event(), duration=60)
    service.shutdown()
    events = [json.loads(m.payload) for m in tags.wait_for(5, timeout=10)]
    pictures = snaps.wait_for(5, timeout=10)
    assert len(events) == len(pictures) == 5
    for m in pictures:
        assert m.topic == "edge/snap-box/belt/snapshot" and m.payload[:2] == b"\xff\xd8"
    # MQTT 5 properties tie each picture to its event, sent directly or through the outbox
    linked = [dict(m.properties.UserProperty)["event_id"] for m in pictures]
    assert sorted(linked) == sorted(e["event_id"] for e in events)
    assert all(m.properties.ContentType == "image/jpeg" for m in pictures)
