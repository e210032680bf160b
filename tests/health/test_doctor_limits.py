"""``doctor`` holds the broker's announced MQTT 5 limits against the largest message the config can make,
and the publisher warns at start-up about what a QoS-0-only or retain-less broker costs (real Mosquitto)."""

from __future__ import annotations

import json
import logging
import pathlib
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.models import MqttConfig
from agent.publish.local_broker import LocalMosquitto
from agent.publish.mqtt_publisher import MqttPublisher
from tests.conftest import MqttCollector


def doctor_limits(tmp_path: pathlib.Path, broker: LocalMosquitto, **sections: Any) -> dict[str, str]:
    doc: dict[str, Any] = {"device_id": "box1", "cameras": [{"id": "belt", "source": "synthetic://conveyor"}],
                           "mqtt": {"url": broker.url}, "metrics": {"listen": "127.0.0.1:0"}, **sections}
    path = tmp_path / "agent.yaml"
    path.write_text(json.dumps(doc))
    result = CliRunner().invoke(app, ["doctor", "--config", str(path), "--timeout", "8", "--json"])
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    row: dict[str, str] = rows["mqtt limits"]
    return row


def test_no_limit_is_ok(tmp_path: pathlib.Path, mosquitto: LocalMosquitto) -> None:
    row = doctor_limits(tmp_path, mosquitto, snapshots={"enabled": True})
    assert row["status"] == "OK", row
    assert "maximum packet size no limit" in row["detail"] and "snapshot 200" in row["detail"]


def test_snapshots_over_the_limit_warn_and_events_over_it_fail(tmp_path: pathlib.Path) -> None:
    with LocalMosquitto(extra_config=["max_packet_size 20000"]) as broker:
        row = doctor_limits(tmp_path, broker, snapshots={"enabled": True}, model={"max_detections": 10})
    assert row["status"] == "WARN" and "maximum packet size 20000 bytes" in row["detail"], row
    assert "snapshots above 20000 bytes will be re-encoded smaller" in row["todo"]
    with LocalMosquitto(extra_config=["max_packet_size 2000"]) as broker:
        row = doctor_limits(tmp_path, broker)
    assert row["status"] == "FAIL" and "tag event (100 detections)" in row["todo"], row
    assert "dead letters" in row["todo"]


def test_qos0_only_and_no_retain_are_said_at_start_up_with_their_cost(
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    with LocalMosquitto(extra_config=["max_qos 0", "retain_available false"]) as broker:
        row = doctor_limits(tmp_path, broker)
        assert row["status"] == "WARN" and "no delivery guarantee" in row["todo"] and "retained" in row["todo"], row
        status = MqttCollector(broker.port, "edge/box1/status").start()
        pub = MqttPublisher(MqttConfig(url=broker.url), "box1")
        pub.start()
        try:
            deadline = time.monotonic() + 15
            while not (pub.stats().connected and status.messages) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert pub.stats().connected, pub.stats().last_error  # the will was adapted to what the broker takes
            assert (pub.limits.maximum_qos, pub.limits.retain_available) == (0, False)
            assert json.loads(status.messages[0].payload)["state"] == "online"  # sent, unretained, QoS 0
            assert not status.messages[0].retain
        finally:
            pub.stop()
            status.close()
    text = caplog.text
    assert "QoS 0 only" in text and "no delivery guarantee" in text
    assert "no retained messages" in text and "refused the last will" in text
