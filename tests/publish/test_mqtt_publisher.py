"""MqttPublisher, tail() and LocalMosquitto against a real Mosquitto broker.

Every test that stops or breaks a broker makes its own; the others share the
module's ``mosquitto`` and use their own device id, so retained status
messages do not cross.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import agent.publish.local_broker as local_broker
from agent.config.models import MqttConfig
from agent.core.event import TagEvent
from agent.core.version import agent_version
from agent.errors import BrokerError, PublishError
from agent.publish.local_broker import LocalMosquitto, free_port
from agent.publish.mqtt_connection import fixed_publish_properties
from agent.publish.mqtt_publisher import MqttPublisher, PublisherStats, route_paho_log
from agent.publish.schema import validate_payload, validate_status
from agent.publish.tail import TailCounts, tail
from agent.publish.topics import parse_tags_topic
from tests.conftest import MqttCollector

EventFactory = Callable[..., TagEvent]
CollectorFactory = Callable[..., MqttCollector]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _json(msg: mqtt.MQTTMessage) -> Any:
    return json.loads(msg.payload)


def _started(url: str, device: str, **config: Any) -> MqttPublisher:
    pub = MqttPublisher(MqttConfig(url=url, **config), device)
    pub.start()
    return pub


def _state(msg: mqtt.MQTTMessage) -> tuple[str, str | None]:
    payload = _json(msg)
    return payload["state"], payload.get("reason")


# -- delivery ------------------------------------------------------------------------------------


def test_every_event_arrives_once_valid_and_in_order_per_camera(
    mosquitto: LocalMosquitto, collector: CollectorFactory, event_factory: EventFactory
) -> None:
    n = 50
    sub = collector(mosquitto.url, "edge/order-box/+/tags")
    pub = _started(mosquitto.url, "order-box")
    try:
        assert pub.wait_connected(5)
        verdicts = ["pass", "defect", "uncertain"]
        events = [
            event_factory(
                device="order-box", camera=f"cam{i % 2}", sequence=i // 2 + 1, verdict=verdicts[i % 3]
            )
            for i in range(n)
        ]
        mids = [pub.publish_event(e) for e in events]
        assert len(set(mids)) == n
        assert pub.flush(10)
        stats = pub.stats()
        got = sub.wait_for(n, timeout=10)
    finally:
        pub.stop()
    assert stats == PublisherStats(
        published=n, acked=n, dropped=0, pending=0, connected=True, last_error=None, connects=1
    )
    time.sleep(0.2)  # anything extra would have arrived by now
    assert len(sub.messages) == n

    payloads = [_json(m) for m in got]
    assert [validate_payload(p) for p in payloads] == [[]] * n
    assert sorted(p["event_id"] for p in payloads) == sorted(e.event_id for e in events)
    for msg, payload in zip(got, payloads, strict=True):
        assert parse_tags_topic(msg.topic) == ("edge", payload["device"], payload["camera"])
        assert msg.qos == 1 and not msg.retain
        assert getattr(msg.properties, "ContentType", None) == "application/json"
    for camera in ("cam0", "cam1"):
        sequences = [p["sequence"] for p in payloads if p["camera"] == camera]
        assert sequences == list(range(1, n // 2 + 1))


def test_puback_no_matching_subscribers_counts_as_acked(
    mosquitto: LocalMosquitto, event_factory: EventFactory
) -> None:
    # MQTT 5 PUBACK reason 16 "No matching subscribers" is a success code (is_failure False).
    pub = _started(mosquitto.url, "lonely-box")
    try:
        for seq in (1, 2, 3):
            pub.publish_event(event_factory(device="lonely-box", sequence=seq))
        assert pub.flush(5)
        stats = pub.stats()
    finally:
        pub.stop()
    assert (stats.acked, stats.dropped, stats.last_error) == (3, 0, None)


def test_mqtt_311_works_too(
    mosquitto: LocalMosquitto, collector: CollectorFactory, event_factory: EventFactory
) -> None:
    sub = collector(mosquitto.url, "edge/v3-box/+/tags")
    pub = _started(mosquitto.url, "v3-box", protocol="3.1.1", client_id="v3-client")
    try:
        assert pub.wait_connected(5)  # the order below holds once connected (see the wire-payload test)
        for seq in (1, 2, 3):
            pub.publish_event(event_factory(device="v3-box", sequence=seq))
        assert pub.flush(5)
        got = sub.wait_for(3)
    finally:
        pub.stop()
    assert [_json(m)["sequence"] for m in got] == [1, 2, 3]
    assert "v3-client" in mosquitto.log_text()


def test_wire_payloads_seen_by_mosquitto_sub(mosquitto: LocalMosquitto, event_factory: EventFactory) -> None:
    # An independent client (mosquitto_sub, C) shows what really went over the wire.
    n = 5
    cmd = [
        "mosquitto_sub",
        "-h",
        "127.0.0.1",
        "-p",
        str(mosquitto.port),
        "-V",
        "mqttv5",
        "-q",
        "1",
        "-i",
        "wire-sub",
        "-t",
        "edge/wire-box/+/tags",
        "-v",
        "-C",
        str(n),
        "-W",
        "10",
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert mosquitto.wait_for_log("wire-sub 1 edge/wire-box/+/tags", 5), mosquitto.log_tail()
            pub = _started(mosquitto.url, "wire-box")
            try:
                # connected first: paho sends what was queued before the connection once it is up, and one
                # published at that moment can overtake them (the outbox's forwarder sends only when connected)
                assert pub.wait_connected(5)
                events = [
                    event_factory(device="wire-box", camera="cam7", sequence=s) for s in range(1, n + 1)
                ]
                for e in events:
                    pub.publish_event(e)
                assert pub.flush(5)
            finally:
                pub.stop()
            out, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == n
    for line, event in zip(lines, events, strict=True):
        topic, payload = line.split(" ", 1)
        assert topic == "edge/wire-box/cam7/tags"
        assert json.loads(payload) == event.to_payload()
        assert validate_payload(json.loads(payload)) == []


# -- status, last will -----------------------------------------------------------------------------


def test_status_is_retained_online_then_offline_on_stop(
    mosquitto: LocalMosquitto, collector: CollectorFactory, event_factory: EventFactory
) -> None:
    pub = _started(mosquitto.url, "status-box")
    try:
        assert pub.wait_connected(5)
        # the status is published just after the connection counts as up: once one subscriber has seen it
        # the broker holds it, and a subscriber that comes after gets it as the retained message
        probe = collector(mosquitto.url, "edge/status-box/status")
        assert probe.wait_until(lambda m: _state(m)[0] == "online")
        fresh = collector(mosquitto.url, "edge/status-box/status")  # subscribes after the publish
        assert fresh.wait_until(lambda m: _state(m)[0] == "online")
    finally:
        pub.stop()
    online = fresh.messages[0]
    assert online.retain
    payload = _json(online)
    assert payload["device"] == "status-box" and payload["version"] == agent_version()
    assert payload["since"].endswith("Z")
    assert validate_status(payload) == []

    after = collector(mosquitto.url, "edge/status-box/status")
    (msg,) = after.wait_for(1)
    assert msg.retain and _state(msg) == ("offline", "shutdown")
    assert validate_status(_json(msg)) == []
    assert not pub.stats().connected
    with pytest.raises(PublishError, match="stopped"):
        pub.publish_event(event_factory(device="status-box"))


def test_last_will_when_the_connection_breaks_then_back_online(
    mosquitto: LocalMosquitto,
    collector: CollectorFactory,
    event_factory: EventFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    status = collector(mosquitto.url, "edge/will-box/status")
    pub = _started(mosquitto.url, "will-box")
    try:
        assert pub.wait_connected(5)
        assert status.wait_until(lambda m: _state(m)[0] == "online")
        sock = pub._client.socket()  # break the TCP connection without a DISCONNECT
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        assert status.wait_until(lambda m: _state(m) == ("offline", "connection lost")), status.messages

        def back_online() -> bool:
            states = [_state(m)[0] for m in status.messages]
            return "online" in states[states.index("offline") :]

        deadline = time.monotonic() + 5
        while not back_online() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert back_online()  # paho reconnected after 1 s and the agent said so
        assert pub.wait_connected(5)
        pub.publish_event(event_factory(device="will-box"))
        assert pub.flush(5)
        assert "lost" in (pub.stats().last_error or "")
    finally:
        pub.stop()
    assert any("lost the connection" in r.getMessage() for r in caplog.records)


def test_last_will_is_retained_when_the_agent_process_dies(
    mosquitto: LocalMosquitto, collector: CollectorFactory
) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from agent.config.models import MqttConfig
        from agent.publish.mqtt_publisher import MqttPublisher
        pub = MqttPublisher(MqttConfig(url={mosquitto.url!r}), "crash-box")
        pub.start()
        if not pub.wait_connected(10):
            sys.exit(3)
        print("ready", flush=True)
        time.sleep(30)
    """)
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        finally:
            proc.send_signal(signal.SIGKILL)  # no clean disconnect: the broker sends the will
            proc.wait(5)
    watcher = collector(mosquitto.url, "edge/crash-box/status")
    assert watcher.wait_until(lambda m: _state(m) == ("offline", "connection lost"))
    fresh = collector(mosquitto.url, "edge/crash-box/status")
    (msg,) = fresh.wait_for(1)
    assert msg.retain and _state(msg) == ("offline", "connection lost")
    assert _json(msg)["device"] == "crash-box"
    assert validate_status(_json(msg)) == []  # the last will


def test_status_extras_are_merged_and_republished_without_waiting_for_the_broker(
    mosquitto: LocalMosquitto, collector: CollectorFactory
) -> None:
    cameras = {"cam1": {"state": "online", "reason": None, "since": "2026-11-22T03:04:05Z"}}
    pub = MqttPublisher(MqttConfig(url=mosquitto.url), "extra-box")
    pub.add_status_extra(lambda: {"outbox_pending": 0, "outbox_evicted": 0})
    pub.add_status_extra(lambda: {"cameras": dict(cameras)})
    pub.republish_status()  # not connected yet: nothing (every connect publishes the status)
    watcher = collector(mosquitto.url, "edge/extra-box/status")
    pub.start()
    try:
        assert watcher.wait_until(lambda m: _state(m)[0] == "online")
        online = _json(watcher.messages[0])
        assert online["outbox_pending"] == 0 and online["cameras"] == cameras
        assert validate_status(online) == []

        cameras["cam1"] = {"state": "reconnecting", "reason": "connection refused", "since": "2026-11-22T03:05:00Z"}
        t0 = time.monotonic()
        pub.republish_status()
        assert time.monotonic() - t0 < 0.1  # queued for paho's thread; no wait for the PUBACK
        assert watcher.wait_until(lambda m: _json(m)["cameras"]["cam1"]["state"] == "reconnecting")
        fresh = collector(mosquitto.url, "edge/extra-box/status")  # what a consumer subscribing now gets
        (retained,) = fresh.wait_for(1)
        assert retained.retain and _json(retained)["cameras"] == cameras
        assert validate_status(_json(retained)) == []
    finally:
        pub.stop()


# -- outages and refusals ----------------------------------------------------------------------------


def test_events_published_while_the_broker_is_down_are_delivered_later(event_factory: EventFactory) -> None:
    topic = "edge/outage-box/+/tags"
    with LocalMosquitto(persistence=True) as broker:
        # A consumer with a persistent session (kept across the broker restart by persistence).
        MqttCollector(broker.port, topic, client_id="outage-sub", session_expiry_s=300).start().close()
        broker.stop()

        pub = _started(broker.url, "outage-box")
        try:
            events = [event_factory(device="outage-box", sequence=s) for s in range(1, 7)]
            for e in events:
                pub.publish_event(e)  # rc MQTT_ERR_NO_CONN: kept in paho's memory
            assert not pub.wait_connected(0.3)
            stats = pub.stats()
            assert (stats.published, stats.pending, stats.connected) == (6, 6, False)
            assert (stats.last_error or "").startswith("cannot connect to broker 127.0.0.1:")

            broker.start()
            # paho's first retry after a failed *first* connect comes ~3 s later (1 s + 2 s backoff)
            assert pub.wait_connected(10)
            assert pub.flush(10)
            stats = pub.stats()
            sub = MqttCollector(broker.port, topic, client_id="outage-sub", session_expiry_s=300).start()
            try:
                got = sub.wait_for(6)  # queued by the broker for the offline session
            finally:
                sub.close()
        finally:
            pub.stop()
    assert (stats.acked, stats.dropped, stats.pending) == (6, 0, 0)
    assert [_json(m)["event_id"] for m in got] == [e.event_id for e in events]


def test_full_queue_drops_are_counted_and_logged(
    event_factory: EventFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.publish.mqtt_publisher")
    pub = _started(f"mqtt://127.0.0.1:{free_port()}", "full-box", max_queued=3)  # nothing listens there
    try:
        events = [event_factory(device="full-box", sequence=s) for s in range(1, 6)]
        for e in events:
            pub.publish_event(e)
        stats = pub.stats()
        assert not pub.flush(0.1)
    finally:
        pub.stop(timeout=0.5)
    assert (stats.published, stats.acked, stats.dropped, stats.pending) == (5, 0, 2, 3)
    dropped_logs = [r.getMessage() for r in caplog.records if "dropped event" in r.getMessage()]
    assert len(dropped_logs) == 2
    assert events[3].event_id in dropped_logs[0] and events[4].event_id in dropped_logs[1]


def test_refused_connection_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="agent.publish.mqtt_publisher")
    with LocalMosquitto(extra_config=["allow_anonymous false"]) as broker:
        pub = _started(broker.url, "refused-box")
        try:
            t0 = time.monotonic()
            assert not pub.wait_connected(5)
            assert time.monotonic() - t0 < 2  # returned on the refusal, not the timeout
            error = pub.stats().last_error or ""
            assert "Not authorized" in error and "135" in error
            # paho retries after 1 s: a second call returns on that refusal (no hot loop),
            # and the repeated refusal is not logged again
            t1 = time.monotonic()
            assert not pub.wait_connected(5)
            assert 0.5 < time.monotonic() - t1 < 4
        finally:
            pub.stop(timeout=0.5)
    refusals = [r for r in caplog.records if "refused the connection" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR


def test_shared_publish_properties_pack_as_paho_s_own_and_are_read_only() -> None:
    shared: Any = fixed_publish_properties("application/json")
    own: Any = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    own.ContentType = "application/json"
    assert shared.pack() == own.pack() and shared.ContentType == "application/json"
    assert fixed_publish_properties("application/json") is shared
    other: Any = fixed_publish_properties("image/jpeg")
    assert other.pack() != shared.pack()  # type: ignore[no-untyped-call]
    with pytest.raises(AttributeError, match="read-only"):
        shared.ContentType = "text/plain"
    assert shared.pack() == own.pack()  # type: ignore[no-untyped-call]


def test_paho_chatter_goes_to_debug_and_is_formatted_only_when_debug_is_on(
    mosquitto: LocalMosquitto, event_factory: EventFactory, caplog: pytest.LogCaptureFixture
) -> None:
    name = "agent.publish.mqtt_publisher.paho"

    class Counted:
        formatted = 0

        def __str__(self) -> str:
            Counted.formatted += 1
            return "counted"

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    route_paho_log(client, logging.getLogger("tests.quiet.paho"))
    logger = client.logger
    assert logger is not None
    caplog.set_level(logging.INFO, logger="tests.quiet.paho")
    logger.log(logging.DEBUG, "Sending PUBLISH %s", Counted())
    logger.log(logging.ERROR, "failed to receive on socket: %s", Counted())  # paho's ERR for routine things
    assert Counted.formatted == 0 and not caplog.records  # quiet: nothing formatted, nothing logged
    logger.log(logging.ERROR, "Caught exception in on_connect: %s", ValueError("a bug in our callback"))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "Caught exception in on_connect: a bug in our callback")]
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="tests.quiet.paho")
    logger.log(logging.ERROR, "failed to receive on socket: %s", Counted())
    assert Counted.formatted >= 1 and [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "failed to receive on socket: counted")]

    caplog.set_level(logging.DEBUG, logger=name)  # the publisher's own client, end to end
    pub = _started(mosquitto.url, "paho-log-box")
    try:
        assert pub.wait_connected(5)
        pub.publish_event(event_factory(device="paho-log-box"))
        assert pub.flush(5)
    finally:
        pub.stop(timeout=1)
    sending = [r for r in caplog.records if r.name == name and "Sending PUBLISH" in r.getMessage()]
    assert sending and all(r.levelno == logging.DEBUG for r in sending)


# -- tail() --------------------------------------------------------------------------------------------


def test_tail_prints_events_and_counts_invalid_payloads(
    mosquitto: LocalMosquitto, event_factory: EventFactory
) -> None:
    all_lines: list[str] = []
    defect_lines: list[str] = []
    counts, defect_counts = TailCounts(), TailCounts()
    results: dict[str, int] = {}
    ready = [threading.Event(), threading.Event()]

    def run_all() -> None:
        results["all"] = tail(
            mosquitto.url,
            device="tail-box",
            validate=True,
            count=4,
            timeout=10,
            out=all_lines.append,
            counts=counts,
            on_subscribed=ready[0].set,
        )

    def run_defects() -> None:
        results["defect"] = tail(
            mosquitto.url,
            device="tail-box",
            camera="cam2",
            verdict="defect",
            count=1,
            timeout=10,
            out=defect_lines.append,
            counts=defect_counts,
            on_subscribed=ready[1].set,
        )

    threads = [threading.Thread(target=run_all), threading.Thread(target=run_defects)]
    for t in threads:
        t.start()
    try:
        assert ready[0].wait(5) and ready[1].wait(5)
        pub = _started(mosquitto.url, "tail-box")
        try:
            pub.publish_event(event_factory(device="tail-box", camera="cam1", sequence=1, verdict="pass"))
            pub.publish_event(
                event_factory(device="tail-box", camera="cam2", sequence=7, verdict="uncertain")
            )
            pub.publish_event(event_factory(device="tail-box", camera="cam2", sequence=8, verdict="defect"))
            assert pub.flush(5)
        finally:
            pub.stop()
        bad = event_factory(device="tail-box", camera="cam1", sequence=2).to_payload()
        bad["verdict"] = "broken"
        subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                str(mosquitto.port),
                "-q",
                "1",
                "-t",
                "edge/tail-box/cam1/tags",
                "-m",
                json.dumps(bad),
            ],
            check=True,
            timeout=10,
        )
    finally:
        for t in threads:
            t.join(12)
    assert results == {"all": 3, "defect": 1}
    assert (counts.shown, counts.invalid) == (3, 1)
    assert len(all_lines) == 5  # 3 events, INVALID header, 1 problem
    assert "tail-box/cam1  #1  pass" in all_lines[0] and "escalation=not_needed" in all_lines[0]
    assert "tail-box/cam2  #7  uncertain" in all_lines[1] and "dent:0.42?" in all_lines[1]
    assert "escalation=unavailable(no escalation gateway configured)" in all_lines[1]
    assert "tail-box/cam2  #8  defect" in all_lines[2] and "scratch:0.91 dent:0.40?" in all_lines[2]
    assert all_lines[3] == "INVALID edge/tail-box/cam1/tags: 1 problem(s)"
    assert all_lines[4].startswith("    $.verdict: 'broken' is not one of")
    assert len(defect_lines) == 1 and "#8  defect" in defect_lines[0]
    assert defect_counts.filtered == 1  # the uncertain frame of cam2 (cam1 is not subscribed)


def test_tail_reports_an_unreachable_broker() -> None:
    with pytest.raises(PublishError, match="cannot connect to broker 127.0.0.1"):
        tail(f"mqtt://127.0.0.1:{free_port()}", timeout=1, out=lambda line: None)
    with pytest.raises(PublishError, match="not a broker URL"):
        tail("http://127.0.0.1:1883", timeout=1)
    refused = r"refused the connection: Not authorized \(135\)"
    with (
        LocalMosquitto(extra_config=["allow_anonymous false"]) as broker,
        pytest.raises(PublishError, match=refused),
    ):
        tail(broker.url, timeout=5, out=lambda line: None)


# -- LocalMosquitto --------------------------------------------------------------------------------------


def test_local_broker_restarts_on_the_same_port() -> None:
    with LocalMosquitto() as broker:
        url = broker.url
        assert url == f"mqtt://127.0.0.1:{broker.port}"
        broker.restart()
        assert broker.url == url and broker.running
        with socket.create_connection(("127.0.0.1", broker.port), timeout=1):
            pass
    assert not broker.running


def test_local_broker_errors_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr("shutil.which", lambda name: None)
        patch.setattr(local_broker, "_FALLBACK_BINARY", "/nonexistent/mosquitto")
        with pytest.raises(BrokerError, match="apt-get install mosquitto"):
            LocalMosquitto()
    with pytest.raises(BrokerError, match='Unknown configuration variable "no_such_option"'):  # noqa: SIM117
        with LocalMosquitto(extra_config=["no_such_option 1"]):
            pass


def test_a_forgotten_local_broker_is_cleaned_up_quietly() -> None:
    broker = LocalMosquitto().start()
    workdir, port = broker.workdir, broker.port
    broker.stop()  # stop() without close(), as a caller may do
    broker.start()
    del broker
    gc.collect()  # the finalizer kills the child and removes the directory, no ResourceWarning
    assert not workdir.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
