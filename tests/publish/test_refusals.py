"""Refused messages: the per-topic gate (pure), the log throttle (pure), and the bound on log lines
when a real Mosquitto refuses 15 messages a second."""

from __future__ import annotations

import logging
import pathlib
import time
from collections.abc import Callable

import pytest

from agent.config.models import AgentConfig, MqttConfig
from agent.core.event import TagEvent
from agent.publish.limits import LogThrottle, publish_packet_size
from agent.publish.local_broker import LocalMosquitto
from agent.publish.mqtt_publisher import MqttPublisher
from agent.publish.outbox import Outbox
from agent.publish.refusals import RefusalGate
from agent.publish.sizes import largest_messages

EventFactory = Callable[..., TagEvent]


def test_a_refused_head_is_retried_with_doubling_backoff_then_dead_and_the_topic_refusing() -> None:
    gate = RefusalGate(max_tries=3, backoff_s=1.0)
    t = "edge/d/cam2/tags"
    assert not gate.refused(t, 10, now=0.0).dead  # try 1 refused: retry at 1.0
    assert gate.holds(t) and not gate.holds("edge/d/cam1/tags")  # only this topic waits
    gate.park(t, 11)
    gate.park(t, 12)
    gate.park(t, 11)  # idempotent
    assert gate.due(0.5) == [] and gate.due(1.0) == [10] and gate.due(1.1) == []  # once per try
    assert not gate.refused(t, 10, now=1.2).dead  # try 2 refused: retry 2 s later
    assert gate.next_retry_in(1.2) == pytest.approx(2.0)
    assert gate.due(3.2) == [10]
    verdict = gate.refused(t, 10, now=3.3)  # try 3 refused: dead after 3 tries
    assert verdict.dead and verdict.tries == 3 and not gate.holds(t)
    assert gate.release() == [11, 12]  # the parked ones go out now, in order
    assert gate.refused(t, 11, now=3.4).dead  # the topic is refusing: one try each
    gate.accepted(t, 12)  # the broker takes one again: the topic is open
    assert not gate.refused(t, 13, now=3.5).dead  # a new refusal gets full tries again


def test_an_accepted_retry_opens_the_topic_and_releases_in_order() -> None:
    gate = RefusalGate(max_tries=5, backoff_s=0.5)
    t = "edge/d/cam1/tags"
    gate.refused(t, 7, now=0.0)
    gate.refused(t, 9, now=0.0)  # was in flight behind the head: it waits behind it too
    gate.park(t, 8)
    assert gate.release() == []  # still probing
    assert gate.due(0.5) == [7]
    gate.accepted(t, 7)
    assert gate.release() == [8, 9] and gate.waiting() == 0


def test_a_head_evicted_while_it_waits_frees_its_topic() -> None:
    gate = RefusalGate(max_tries=3, backoff_s=1.0)
    gate.refused("t", 5, now=0.0)
    gate.park("t", 6)
    assert gate.due(1.0) == [5]
    gate.forget(5)  # the outbox evicted it meanwhile
    assert not gate.holds("t") and gate.release() == [6]


def test_refusing_ends_after_its_window_and_a_probe_starts_again() -> None:
    gate = RefusalGate(max_tries=2, backoff_s=0.1, refusing_s=60.0)
    gate.refused("t", 1, now=0.0)
    assert gate.refused("t", 1, now=0.2).dead
    assert gate.refused("t", 2, now=30.0).dead  # within the window: one try
    assert not gate.refused("t", 3, now=61.0).dead  # after it: probing again


@pytest.mark.parametrize("kwargs", [{"max_tries": 0}, {"backoff_s": 0.0}, {"backoff_s": 5.0, "backoff_max_s": 1.0}])
def test_bad_gate_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="expected|at least"):
        RefusalGate(**kwargs)  # type: ignore[arg-type]


def test_log_throttle_logs_once_per_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(logging.getLogger("agent.test"), interval_s=0.2)
    caplog.set_level(logging.WARNING, logger="agent.test")
    logged = [throttle.warning("k", "refused %s", i) for i in range(50)]
    assert logged.count(True) == 1
    time.sleep(0.25)
    assert throttle.warning("k", "refused %s", 50) and throttle.warning("other", "x")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "refused 0" and lines[1].startswith("refused 50 (49 more like this in the last")
    assert len(lines) == 3


@pytest.mark.parametrize(("topic", "payload", "props", "expected"), [
    ("a/b", 10, 0, 1 + 1 + 2 + 3 + 2 + 10),  # fixed header 2 bytes (remaining 17 < 128)
    ("a/b", 200, 0, 1 + 2 + 2 + 3 + 2 + 200),  # remaining 207: a 2-byte length
    ("a/b", 10, 20, 1 + 1 + 2 + 3 + 2 + 20 + 10),  # with 20 bytes of properties
])
def test_publish_packet_size_counts_every_byte(topic: str, payload: int, props: int, expected: int) -> None:
    assert publish_packet_size(topic, payload, props) == expected


def test_packet_size_matches_what_paho_writes(mosquitto: LocalMosquitto, tmp_path: pathlib.Path) -> None:
    """Mosquitto with max_packet_size N takes a packet of exactly N bytes, and our count says N + 1 is too
    large. (Mosquitto 2.0.11 itself is a little lenient: it counts a 2-byte Remaining Length as 1 byte and
    closes the connection only from N + 3 bytes on; the agent keeps to the MQTT 5 rule, the whole packet.)"""
    with LocalMosquitto(extra_config=["max_packet_size 300"]) as broker:
        pub = MqttPublisher(MqttConfig(url=broker.url), "dev1")
        acks: list[bool] = []
        pub.set_ack_listener(lambda tag, rc: acks.append(not rc.is_failure))
        pub.start()
        try:
            assert pub.wait_connected(10)
            topic = "edge/dev1/cam1/tags"
            props = pub._properties_len("application/json", "e1")  # noqa: SLF001
            fits = b"x" * max(n for n in range(300) if publish_packet_size(topic, n, props) <= 300)
            assert pub.oversize(topic, len(fits), event_id="e1") is None
            assert pub.oversize(topic, len(fits) + 1, event_id="e1") == 301
            assert pub.publish_raw(topic, fits, "1", event_id="e1")
            deadline = time.monotonic() + 5
            while not acks and time.monotonic() < deadline:
                time.sleep(0.02)
            assert acks == [True] and pub.stats().connects == 1  # exactly at the limit: taken
            assert pub.publish_raw(topic, fits + b"xxx", "2", event_id="e1")  # publish_raw itself does not check
            while pub.stats().connects < 2 and time.monotonic() < deadline + 5:
                time.sleep(0.02)
            assert pub.stats().connects == 2 and "lost" in (pub.stats().last_error or "")  # over the limit: closed
        finally:
            pub.stop()


def test_doctor_sizes_grow_with_the_config() -> None:
    base = AgentConfig.model_validate({"device_id": "box", "cameras": [{"id": "c", "source": "synthetic://conveyor"}]})
    snap = base.model_copy(update={"snapshots": base.snapshots.model_copy(update={"enabled": True})})
    sizes = dict(largest_messages(snap))
    assert sizes["snapshot"] > snap.snapshots.max_bytes
    assert sizes["tag event (100 detections)"] > 10_000  # 100 boxes with labels and confidences
    assert "snapshot" not in dict(largest_messages(base))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_broker_refusing_15_a_second_for_a_minute_costs_at_most_4_log_lines(
        tmp_path: pathlib.Path, event_factory: EventFactory, caplog: pytest.LogCaptureFixture) -> None:
    run_refusals(tmp_path, event_factory, caplog, seconds=60.0, max_lines=4)


def test_a_broker_refusing_15_a_second_costs_2_log_lines(
        tmp_path: pathlib.Path, event_factory: EventFactory, caplog: pytest.LogCaptureFixture) -> None:
    run_refusals(tmp_path, event_factory, caplog, seconds=4.0, max_lines=2)


def run_refusals(tmp_path: pathlib.Path, event_factory: EventFactory, caplog: pytest.LogCaptureFixture,
                 seconds: float, max_lines: int) -> None:
    """An ACL denies every tags topic; 15 events a second. The bound: the refusal and the dead letter are
    each logged once, then at most once a minute with the count since (so <= 2 per cause per minute)."""
    from agent.publish.reliable import ReliablePublisher

    acl = tmp_path / "acl"
    acl.write_text("topic readwrite #\ntopic deny edge/+/+/tags\n")
    caplog.set_level(logging.WARNING, logger="agent")
    with LocalMosquitto(extra_config=[f"acl_file {acl}"]) as broker:
        pub = ReliablePublisher(Outbox(tmp_path / "o.sqlite"), MqttPublisher(MqttConfig(url=broker.url), "dev1"),
                                topic_prefix="edge", refused_tries=3, refused_backoff_s=0.5)
        pub.start()
        try:
            assert pub.wait_connected(10)
            n = int(seconds * 15)
            t0 = time.monotonic()
            for i in range(n):
                pub.publish_event(event_factory(device="dev1", camera=f"cam{i % 3}", sequence=i))
                time.sleep(max(0.0, t0 + (i + 1) / 15 - time.monotonic()))
            deadline = time.monotonic() + 15
            while pub.stats().dead_letters < n and time.monotonic() < deadline:
                time.sleep(0.05)
            st = pub.stats()
            assert (st.dead_letters, st.pending) == (n, 0), st
            assert st.refused >= n
        finally:
            pub.stop()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) <= max_lines, lines
    assert any("Not authorized" in line for line in lines)
