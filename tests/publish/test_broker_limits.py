"""No message may block the outbox: the broker's MQTT 5 limits and refusals, against a real Mosquitto.

- ``max_packet_size`` (announced in CONNACK): oversized snapshots are shrunk or dropped and counted,
  every tag event gets through in order; with a limit below a tag event the events are dead-lettered
  with one log line and a status that says why.
- an ACL that denies one camera's tags topic: the other cameras' events all arrive, the denied ones
  are dead-lettered after the stated tries, and ``requeue`` delivers them once the ACL is fixed.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import signal
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.models import MqttConfig
from agent.core.event import TagEvent
from agent.errors import PublishError
from agent.publish import deadletters
from agent.publish.local_broker import LocalMosquitto
from agent.publish.mqtt_publisher import MqttPublisher
from agent.publish.outbox import Outbox
from agent.publish.reliable import ReliablePublisher
from agent.publish.schema import validate_status
from tests.conftest import MqttCollector

EventFactory = Callable[..., TagEvent]
Collect = Callable[..., MqttCollector]


def noisy_jpeg(seed: int, size: tuple[int, int] = (480, 640)) -> bytes:
    """A JPEG that compresses badly (noise): about 200 KB at quality 90."""
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf.tobytes())


def wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def publisher(tmp_path: pathlib.Path) -> Iterator[Callable[..., ReliablePublisher]]:
    made: list[ReliablePublisher] = []

    def make(broker: LocalMosquitto, **kw: float) -> ReliablePublisher:
        pub = ReliablePublisher(Outbox(tmp_path / "outbox.sqlite"), MqttPublisher(MqttConfig(url=broker.url), "dev1"),
                                topic_prefix="edge", **kw)  # type: ignore[arg-type]
        pub.start()
        assert pub.wait_connected(10)
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.stop()


def test_oversized_snapshots_are_shrunk_and_every_tag_event_arrives_in_order(
        publisher: Callable[..., ReliablePublisher], collector: Collect, event_factory: EventFactory) -> None:
    with LocalMosquitto(extra_config=["max_packet_size 20000"]) as broker:
        tags = collector(broker.port, "edge/+/+/tags")
        snaps = collector(broker.port, "edge/+/+/snapshot")
        pub = publisher(broker)
        assert pub.mqtt.limits.max_packet_size == 20000  # read from the CONNACK
        jpeg = noisy_jpeg(1)
        assert len(jpeg) > 100_000
        for i in range(1, 41):
            event = event_factory(device="dev1", camera=f"cam{i % 2}", sequence=i)
            pub.publish_event(event)
            if i % 4 == 0:  # committed to the outbox before the limit is checked at send time too
                pub.outbox.append(event.event_id + "/snapshot", event.camera, f"edge/dev1/{event.camera}/snapshot",
                                  jpeg)
                pub.publish_snapshot(event.camera, event.event_id, jpeg, durable=True)  # checked at commit
        assert pub.flush(30), pub.stats()
        got = tags.wait_for(40, timeout=10)
        assert len(got) == 40
        for camera in ("cam0", "cam1"):
            seqs = [json.loads(m.payload)["sequence"] for m in got if json.loads(m.payload)["camera"] == camera]
            assert seqs == sorted(seqs) and len(seqs) == 20  # every event, in commit order
        assert len(snaps.wait_for(20, timeout=10)) == 20  # every snapshot, smaller
        assert all(len(m.payload) < 20000 and m.payload[:2] == b"\xff\xd8" for m in snaps.messages)
        st = pub.stats()
        assert (st.snapshots_shrunk, st.snapshots_dropped, st.dead_letters, st.pending) == (20, 0, 0, 0)
        assert broker.running  # never disconnected for a too-large packet
        assert pub.mqtt.stats().connects == 1


def test_a_limit_below_a_tag_event_dead_letters_events_with_one_line_and_the_status_says_why(
        publisher: Callable[..., ReliablePublisher], collector: Collect, event_factory: EventFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    with LocalMosquitto(extra_config=["max_packet_size 400"]) as broker:
        status = collector(broker.port, "edge/dev1/status")
        caplog.set_level(logging.WARNING, logger="agent")
        pub = publisher(broker)
        event = event_factory(device="dev1", camera="cam1", sequence=1)
        assert len(event.to_json()) > 400
        for i in range(1, 31):
            pub.publish_event(event_factory(device="dev1", camera="cam1", sequence=i))
        pub.publish_snapshot("cam1", event.event_id, noisy_jpeg(2), durable=True)  # cannot fit at all
        assert wait(lambda: pub.stats().dead_letters == 30, 10), pub.stats()
        pub.publish_stats({})  # the periodic stats tick republishes the status with the final count
        assert wait(lambda: any(json.loads(m.payload).get("outbox_dead_letters") == 30 for m in status.messages), 5)
        st = pub.stats()
        assert (st.pending, st.dead_by_cause, st.snapshots_dropped, st.connected) == (0, (("too_large", 30),), 1, True)
        assert pub.forwarder_alive and pub.mqtt.stats().connects == 1  # still running, never thrown off
        dead_lines = [r for r in caplog.records if "dead letters" in r.getMessage()]
        assert len(dead_lines) == 1, [r.getMessage() for r in dead_lines]
        assert "larger than the broker's maximum packet size of 400 bytes" in dead_lines[0].getMessage()
        doc = json.loads(status.messages[-1].payload)
        assert validate_status(doc) == []
        assert doc["outbox_dead_letter_causes"] == {"too_large": 30}
        assert "maximum packet size of 400 bytes" in doc["outbox_dead_letter_reason"]
        assert len(status.messages[-1].payload) < 400  # trimmed to fit
        pub.mqtt.publish_stats("edge/dev1/stats", {"filler": "x" * 500})  # does not fit either: not sent
        with pytest.raises(PublishError, match="larger than the broker's maximum packet size of 400 bytes"):
            pub.mqtt.publish_event(event)  # the bare publisher (no outbox) refuses it too, never sends it
        assert pub.mqtt.stats().connects == 1 and pub.stats().connected
        assert any("stats document of" in r.getMessage() for r in caplog.records)


def test_a_256_byte_limit_still_gets_a_status_with_the_dead_letters_cause(
        publisher: Callable[..., ReliablePublisher], collector: Collect, event_factory: EventFactory) -> None:
    with LocalMosquitto(extra_config=["max_packet_size 256"]) as broker:
        status = collector(broker.port, "edge/dev1/status")
        pub = publisher(broker)
        for i in range(1, 11):
            pub.publish_event(event_factory(device="dev1", camera="cam1", sequence=i))
        assert wait(lambda: pub.stats().dead_letters == 10, 10), pub.stats()
        pub.publish_stats({})
        assert wait(lambda: any(json.loads(m.payload).get("outbox_dead_letters") == 10 for m in status.messages), 5)
        doc = json.loads(status.messages[-1].payload)
        assert validate_status(doc) == [] and doc["outbox_dead_letter_causes"] == {"too_large": 10}, doc
        assert pub.forwarder_alive and pub.mqtt.stats().connects == 1


ACL_DENY_CAM2 = "topic readwrite #\ntopic deny edge/dev1/cam2/tags\n"


def test_acl_denying_one_camera_dead_letters_it_after_the_tries_and_requeue_delivers_after_the_fix(
        tmp_path: pathlib.Path, publisher: Callable[..., ReliablePublisher], collector: Collect,
        event_factory: EventFactory, caplog: pytest.LogCaptureFixture) -> None:
    acl = tmp_path / "acl"
    acl.write_text(ACL_DENY_CAM2)
    with LocalMosquitto(extra_config=[f"acl_file {acl}"]) as broker:
        tags = collector(broker.port, "edge/+/+/tags")
        caplog.set_level(logging.WARNING, logger="agent")
        pub = publisher(broker, refused_tries=3, refused_backoff_s=0.2)
        for i in range(1, 91):  # 30 per camera, at about 45 a second
            pub.publish_event(event_factory(device="dev1", camera=f"cam{1 + i % 3}", sequence=i))
            time.sleep(0.02)
        assert wait(lambda: pub.stats().dead_letters == 30 and pub.stats().pending == 0, 20), pub.stats()
        got = tags.wait_for(60, timeout=5)
        per_camera: dict[str, list[int]] = {}
        for m in got:
            doc = json.loads(m.payload)
            per_camera.setdefault(doc["camera"], []).append(doc["sequence"])
        assert sorted(per_camera) == ["cam1", "cam3"]  # cam2 denied
        assert all(len(s) == 30 and s == sorted(s) for s in per_camera.values())  # all, in order
        st = pub.stats()
        assert st.dead_by_cause == (("refused 0x87", 30),)
        admin = Outbox(tmp_path / "outbox.sqlite")  # as `edge-agent outbox` opens it, beside the agent
        rows = list(deadletters.export(admin))
        assert max(r["tries"] for r in rows) == 3  # the first was tried 3 times (0.2 s, 0.4 s backoff)
        assert all(r["topic"] == "edge/dev1/cam2/tags" and "Not authorized" in r["detail"] for r in rows)
        assert len([r for r in caplog.records if "dead letters" in r.getMessage()]) == 1
        assert len([r for r in caplog.records if "refused" in r.getMessage()]) <= 2  # refusal + dead letter

        acl.write_text("topic readwrite #\n")  # the ACL is fixed; mosquitto reloads it on SIGHUP
        os.kill(broker._proc.pid, signal.SIGHUP)  # type: ignore[union-attr]  # noqa: SLF001
        time.sleep(0.5)
        admin.close()
        result = CliRunner().invoke(app, ["outbox", "requeue", "--file", str(tmp_path / "outbox.sqlite")])
        assert result.exit_code == 0 and "requeued 30 dead letter(s)" in result.stdout  # beside the running agent
        assert wait(lambda: len(tags.messages) >= 90, 10), len(tags.messages)
        cam2 = [json.loads(m.payload)["sequence"] for m in tags.messages if b'"cam2"' in m.payload]
        assert cam2 == sorted(cam2) and len(cam2) == 30  # delivered, in their order
        assert wait(lambda: pub.stats().dead_letters == 0 and pub.stats().pending == 0, 5), pub.stats()


def test_a_qos0_only_broker_gets_every_event_at_qos0_with_a_warning(
        tmp_path: pathlib.Path, collector: Collect, event_factory: EventFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent")
    with LocalMosquitto(extra_config=["max_qos 0"]) as broker:
        tags = collector(broker.port, "edge/+/+/tags")
        pub = ReliablePublisher(Outbox(tmp_path / "o.sqlite"),
                                MqttPublisher(MqttConfig(url=broker.url), "dev1"), topic_prefix="edge")
        pub.start()
        try:
            assert wait(lambda: pub.stats().connected, 15), pub.stats()  # after the will was adapted
            for i in range(1, 21):
                pub.publish_event(event_factory(device="dev1", camera="cam1", sequence=i))
            assert pub.flush(10), pub.stats()
            got = tags.wait_for(20, timeout=5)
            assert [json.loads(m.payload)["sequence"] for m in got] == list(range(1, 21))
            assert pub.mqtt.limits.maximum_qos == 0
        finally:
            pub.stop()
    assert "QoS 0 only" in caplog.text and "no delivery guarantee" in caplog.text
