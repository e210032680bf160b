"""deploy/mosquitto/edge-bridge.conf with two real Mosquitto processes on loopback: the box's own broker runs
the example's lines, the central one checks the bridge's user and password. An agent's publisher (outbox +
MqttPublisher) on the box broker; a subscriber on the central one.

The only changes made to the example: the box broker's listener and persistence folder are the test's
(LocalMosquitto's free port and its temp folder as persistence_location, so the example's ``listener`` and
``allow_anonymous`` lines are left out), and ``address`` names the central broker's free port."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest

from agent.config.models import MqttConfig
from agent.core.event import TagEvent
from agent.publish.local_broker import LocalMosquitto
from agent.publish.mqtt_publisher import MqttPublisher
from agent.publish.outbox import Outbox
from agent.publish.reliable import ReliablePublisher
from tests.conftest import MqttCollector

EventFactory = Callable[..., TagEvent]
EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "edge-bridge.conf"
DEVICE = "line3-box1"
LEFT_OUT = ("listener ", "allow_anonymous ")


def _setting(lines: list[str], name: str) -> str:
    [value] = [line.split(None, 1)[1] for line in lines if line.startswith(f"{name} ")]
    return value


def bridge_lines(central_port: int) -> list[str]:
    lines = [line.strip() for line in EXAMPLE.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line and not line.startswith("#") and not line.startswith(LEFT_OUT)]
    assert re.fullmatch(r"\S+:1883", _setting(lines, "address"))
    return [f"address 127.0.0.1:{central_port}" if line.startswith("address ") else line for line in lines]


@pytest.fixture
def brokers(tmp_path: pathlib.Path) -> Iterator[tuple[LocalMosquitto, LocalMosquitto]]:
    lines = bridge_lines(0)
    passwords = tmp_path / "central.passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), _setting(lines, "remote_username"),
                    _setting(lines, "remote_password")], check=True, capture_output=True, timeout=30)
    passwords.chmod(0o644)  # the broker may run as another user
    # the central broker: anonymous subscribers welcome, the bridge's user and password checked
    with LocalMosquitto(persistence=True, extra_config=[f"password_file {passwords}"]) as central, \
            LocalMosquitto(persistence=True, extra_config=bridge_lines(central.port)) as box:
        yield central, box


def _publisher(tmp_path: pathlib.Path, box: LocalMosquitto) -> ReliablePublisher:
    pub = ReliablePublisher(Outbox(tmp_path / "outbox.sqlite"),
                            MqttPublisher.from_config(MqttConfig(url=box.url), DEVICE), topic_prefix="edge")
    pub.start()
    assert pub.wait_connected(5)
    return pub


def _payloads(sub: MqttCollector, topic_end: str) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in list(sub.messages) if m.topic.endswith(topic_end)]


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_an_event_crosses_the_bridge_with_qos_1_and_survives_a_central_outage(
        tmp_path: pathlib.Path, brokers: tuple[LocalMosquitto, LocalMosquitto], event_factory: EventFactory) -> None:
    central, box = brokers
    sub = MqttCollector(central.port, f"edge/{DEVICE}/#", client_id="plant-mes", session_expiry_s=300).start()
    pub = _publisher(tmp_path, box)
    try:
        # the bridge says it is up, retained, at the central broker
        assert sub.wait_until(lambda m: m.topic == f"edge/{DEVICE}/bridge" and m.payload == b"1", 10)
        first = event_factory(device=DEVICE, camera="cam1", sequence=1)
        pub.publish_event(first)
        assert sub.wait_until(lambda m: m.topic.endswith("/cam1/tags"), 10)
        [tags] = [m for m in sub.messages if m.topic.endswith("/cam1/tags")]
        assert tags.qos == 1 and json.loads(tags.payload)["event_id"] == first.event_id
        # the box's retained status is retained at the central broker too: a late subscriber gets it
        late = MqttCollector(central.port, f"edge/{DEVICE}/status").start()
        try:
            [status] = late.wait_for(1, 5)
            assert status.retain and json.loads(status.payload)["state"] == "online"
        finally:
            late.close()
        # the central broker goes away; the box broker takes the events (the outbox is emptied) and queues them
        central.stop()
        queued = [event_factory(device=DEVICE, camera="cam2", sequence=i) for i in range(1, 6)]
        for event in queued:
            pub.publish_event(event)
        assert pub.flush(10) and pub.stats().pending == 0
        central.start()  # same port, its sessions kept: the bridge reconnects and delivers the queue
        ids = {e.event_id for e in queued}
        assert _wait(lambda: ids <= {str(p["event_id"]) for p in _payloads(sub, "/cam2/tags")}, 40), \
            f"{len(_payloads(sub, '/cam2/tags'))} of 5 queued events arrived"
    finally:
        pub.stop()
        sub.close()


def test_a_dead_box_shows_as_the_bridge_will_not_as_the_agents(
        tmp_path: pathlib.Path, brokers: tuple[LocalMosquitto, LocalMosquitto]) -> None:
    """A power cut at the box takes the agent and its broker down at once: the agent's will fires nowhere the
    plant sees; the bridge's will (retained "0" on the notification topic) is what says the box is gone."""
    central, box = brokers
    pub = _publisher(tmp_path, box)
    sub = MqttCollector(central.port, f"edge/{DEVICE}/#").start()
    try:
        assert sub.wait_until(lambda m: m.topic == f"edge/{DEVICE}/status"
                              and json.loads(m.payload)["state"] == "online", 10)
        box.kill()  # SIGKILL: no clean disconnect of the bridge
        assert sub.wait_until(lambda m: m.topic == f"edge/{DEVICE}/bridge" and m.payload == b"0", 60)
        # the retained status still says online: consumers must read it together with the bridge topic
        states = [json.loads(m.payload)["state"] for m in sub.messages if m.topic.endswith("/status")]
        assert states[-1] == "online"
    finally:
        pub.stop(timeout=0.5)
        sub.close()


def test_consumers_share_the_tags_through_an_mqtt5_shared_subscription(
        tmp_path: pathlib.Path, brokers: tuple[LocalMosquitto, LocalMosquitto], event_factory: EventFactory) -> None:
    """Two instances of one consumer on $share/mes/edge/+/+/tags at the central broker: each event to one."""
    central, box = brokers
    group = [MqttCollector(central.port, "$share/mes/edge/+/+/tags", client_id=f"mes-{i}").start() for i in (1, 2)]
    pub = _publisher(tmp_path, box)
    try:
        sent = [event_factory(device=DEVICE, camera="cam1", sequence=i) for i in range(1, 21)]
        for event in sent:
            pub.publish_event(event)
        assert _wait(lambda: sum(len(c.messages) for c in group) >= len(sent), 15)
        got = [[json.loads(m.payload)["event_id"] for m in c.messages] for c in group]
        assert sorted(got[0] + got[1]) == sorted(e.event_id for e in sent)  # each exactly once
        assert got[0] and got[1]  # both instances took a share
        assert all(m.qos == 1 for c in group for m in c.messages)
    finally:
        pub.stop()
        for c in group:
            c.close()


def test_the_example_names_one_box_throughout() -> None:
    lines = bridge_lines(1883)
    topics = [line.split()[1] for line in lines if line.startswith("topic ")]
    assert all(t.startswith(f"edge/{DEVICE}/") for t in topics)
    assert _setting(lines, "remote_clientid") == f"bridge-{DEVICE}"
    assert _setting(lines, "notification_topic") == f"edge/{DEVICE}/bridge"
    assert mqtt.topic_matches_sub("edge/+/+/tags", f"edge/{DEVICE}/cam1/tags")


BENCH = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_broker.py"


def test_the_broker_bench_runs_and_counts_what_arrived() -> None:
    """scripts/bench_broker.py in small (docs/fleet.md's broker figures come from its full run)."""
    proc = subprocess.run([sys.executable, str(BENCH), "--boxes", "1", "2", "--events", "40", "--rounds", "1"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert re.search(r"^\s+1\s+[\d,]+\s+[\d,]+\s+1\.00x\s+0$", proc.stdout, re.M), proc.stdout  # 40 events, none lost
    assert re.search(r"^\s+2\s+[\d,]+\s+[\d,]+\s+\d+\.\d\dx\s+\d+$", proc.stdout, re.M), proc.stdout
    bad = subprocess.run([sys.executable, str(BENCH), "--boxes", "0"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert bad.returncode == 2 and "--boxes each 1 to 64" in bad.stderr
