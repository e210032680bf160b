"""Sparkplug B end to end: the whole agent on a synthetic camera, a real Mosquitto, and a subscriber whose every
message is read by the independent decoder (:mod:`tests.outputs.spb_wire`) and checked against the
specification's rules (:mod:`tests.outputs.spb_rules`)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.config.models import AgentConfig, CameraConfig, MetricsConfig, MqttConfig
from agent.config.sparkplug import SparkplugConfig
from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_status
from agent.runtime.service import AgentService
from tests.conftest import MqttCollector
from tests.outputs.spb_rules import EdgeNodeChecker
from tests.outputs.spb_wire import rebirth_command

GROUP, NODE = "plant1", "line3-box1"


def config(broker: LocalMosquitto, source: str, **sparkplug: object) -> AgentConfig:
    return AgentConfig(device_id="box1", cameras=[CameraConfig(id="belt", source=source)],
                       mqtt=MqttConfig(url=broker.url), metrics=MetricsConfig(listen="127.0.0.1:0"),
                       sparkplug=SparkplugConfig(enabled=True, group_id=GROUP, edge_node_id=NODE,
                                                 **sparkplug))  # type: ignore[arg-type]


def checked(sub: MqttCollector) -> EdgeNodeChecker:
    checker = EdgeNodeChecker(GROUP, NODE)
    for m in list(sub.messages):
        checker.feed(m.topic, m.payload, m.qos, m.retain)
    return checker


def event_ids(checker: EdgeNodeChecker) -> list[str]:
    return [p.values()["Inspection/Event Id"] for p in checker.ddata()]


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kinds(sub: MqttCollector) -> list[str]:
    return [m.topic.split("/")[2] for m in list(sub.messages) if not m.topic.startswith("spBv1.0/STATE")]


@pytest.fixture
def agent() -> Iterator[Callable[[AgentConfig], AgentService]]:
    made: list[AgentService] = []

    def make(cfg: AgentConfig) -> AgentService:
        service = AgentService(cfg)
        made.append(service)
        service.start()
        return service

    yield make
    for service in made:
        service.shutdown(timeout=5.0)


def test_birth_data_death_seq_wrap_and_the_will_on_a_killed_connection(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector],
    agent: Callable[[AgentConfig], AgentService],
) -> None:
    frames = 300  # + NBIRTH + DBIRTH: past seq 255
    sub = collector(mosquitto.url, "spBv1.0/#")
    service = agent(config(mosquitto, f"synthetic://conveyor?seed=4&fps=0&frames={frames}&width=320&height=240"))
    node = service.sparkplug
    assert node is not None and node.wait_born(10.0)
    assert wait_until(lambda: node.sent >= 260, 30.0)  # seq has wrapped in this session
    # kill the connection under the node (no DISCONNECT): the broker publishes the will
    node.client.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    assert wait_until(lambda: kinds(sub).count("NBIRTH") >= 2, 15.0), kinds(sub)[-5:]
    service.wait(threading.Event(), duration=60.0)
    assert service.loop is not None and service.loop.finished
    summary = service.shutdown(timeout=10.0)
    assert wait_until(lambda: kinds(sub)[-1:] == ["NDEATH"], 5.0)

    checker = checked(sub)
    assert checker.violations == [], checker.summary()
    first, second = checker.sessions
    assert first.death == "NDEATH" and second.death == "NDEATH"  # the will, then the clean shutdown's
    assert second.bdseq == (first.bdseq + 1) % 256
    will = [m for m in sub.messages if m.topic.endswith("/NDEATH/" + NODE)][0]
    assert will.qos == 1  # the will registered at CONNECT (QoS 1); its bdSeq matched the first NBIRTH's above
    assert checker.wraps >= 1
    ids = event_ids(checker)
    assert set(ids) == {e for e in ids} and len(set(ids)) == frames == sum(summary.inspected.values())
    last = checker.ddata()[-1].values()
    assert last["Counters/Inspected"] == frames
    assert last["Counters/Pass"] + last["Counters/Defect"] + last["Counters/Uncertain"] == frames


def test_a_rebirth_request_gets_nbirth_and_dbirth_again(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector],
    agent: Callable[[AgentConfig], AgentService], caplog: pytest.LogCaptureFixture,
) -> None:
    sub = collector(mosquitto.url, "spBv1.0/#")
    status = collector(mosquitto.url, "edge/box1/status")
    service = agent(config(mosquitto, "synthetic://conveyor?seed=5&fps=10&frames=40"))
    node = service.sparkplug
    assert node is not None and node.wait_born(10.0)
    assert wait_until(lambda: node.sent >= 5, 20.0)
    service.publisher.republish_status()
    assert status.wait_until(lambda m: json.loads(m.payload).get("sparkplug", {}).get("state") == "born", 5.0)
    docs = [json.loads(m.payload) for m in status.messages]
    assert all(validate_status(d) == [] for d in docs), [validate_status(d) for d in docs]
    assert docs[-1]["sparkplug"]["node"] == f"{GROUP}/{NODE}" and docs[-1]["sparkplug"]["bdseq"] >= 0
    host = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    host.connect("127.0.0.1", mosquitto.port)
    host.loop_start()
    for _ in range(3):  # garbage first: ignored, said once
        host.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", b"\xff\xff not protobuf", qos=1).wait_for_publish(5)
    host.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", rebirth_command(int(time.time() * 1000)), qos=0).wait_for_publish(5)
    assert wait_until(lambda: kinds(sub).count("NBIRTH") == 2, 10.0), kinds(sub)
    host.disconnect()
    host.loop_stop()
    service.wait(threading.Event(), duration=30.0)
    service.shutdown(timeout=10.0)
    assert wait_until(lambda: kinds(sub)[-1:] == ["NDEATH"], 5.0)
    checker = checked(sub)
    assert checker.violations == [], checker.summary()
    assert len(checker.sessions) == 1 and checker.sessions[0].births == 2  # same connection, same bdSeq
    after = kinds(sub)[kinds(sub).index("NBIRTH", 1):]
    assert after[:2] == ["NBIRTH", "DBIRTH"]
    assert len(set(event_ids(checker))) == 40
    ignored = [r for r in caplog.records if "ignoring an NCMD" in r.getMessage()]
    assert len(ignored) == 1 and "not a Sparkplug B payload" in ignored[0].getMessage()


def _state(online: bool, ts: int) -> bytes:
    return json.dumps({"online": online, "timestamp": ts}).encode()


def test_no_births_while_the_primary_host_is_offline_then_everything_as_historical(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector],
    agent: Callable[[AgentConfig], AgentService],
) -> None:
    host = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    host.connect("127.0.0.1", mosquitto.port)
    host.loop_start()
    state_topic = "spBv1.0/STATE/scada1"
    t0 = int(time.time() * 1000)
    host.publish(state_topic, _state(False, t0), qos=1, retain=True).wait_for_publish(5)
    sub = collector(mosquitto.url, "spBv1.0/#")
    frames = 20
    service = agent(config(mosquitto, f"synthetic://conveyor?seed=6&fps=20&frames={frames}",
                           primary_host_id="scada1"))
    node = service.sparkplug
    assert node is not None
    service.wait(threading.Event(), duration=20.0)  # every frame inspected while the host is offline
    time.sleep(0.5)
    assert kinds(sub) == [], "no Sparkplug message may go out before the primary host is online"
    assert node.store.stats().rows == frames
    host.publish(state_topic, _state(True, t0 + 1), qos=1, retain=True).wait_for_publish(5)
    assert node.wait_born(10.0)
    assert wait_until(lambda: node.store.stats().rows == 0, 10.0)
    def historical() -> int:
        return len([p for p in checked(sub).ddata() if all(m.is_historical for m in p.metrics)])

    assert wait_until(lambda: historical() == frames, 5.0), historical()  # the subscriber gets them a moment later
    # the host goes offline: the node ends its session (NDEATH) and waits; online again: a new session
    host.publish(state_topic, _state(False, t0 + 2), qos=1, retain=True).wait_for_publish(5)
    assert wait_until(lambda: kinds(sub)[-1:] == ["NDEATH"], 10.0), kinds(sub)[-3:]
    time.sleep(1.5)
    assert kinds(sub)[-1] == "NDEATH"  # reconnected, but quiet while the host is offline
    host.publish(state_topic, _state(True, t0 + 3), qos=1, retain=True).wait_for_publish(5)
    assert wait_until(lambda: kinds(sub).count("NBIRTH") == 2, 10.0)
    host.publish(state_topic, b"", qos=1, retain=True).wait_for_publish(5)  # leave no retained STATE behind
    host.disconnect()
    host.loop_stop()
    service.shutdown(timeout=10.0)
    checker = checked(sub)
    assert checker.violations == [], checker.summary()
    assert [s.bdseq for s in checker.sessions][1] == (checker.sessions[0].bdseq + 1) % 256


def test_a_broker_outage_mid_run_loses_no_event_and_the_backlog_comes_historical(
    collector: Callable[..., MqttCollector], agent: Callable[[AgentConfig], AgentService],
) -> None:
    frames = 120
    # a persistent subscriber whose QoS 0 messages the broker queues while it reconnects, across the restart
    with LocalMosquitto(persistence=True, extra_config=["queue_qos0_messages true"]) as broker:
        sub = collector(broker.url, "spBv1.0/#", client_id="spb-watch", session_expiry_s=600)
        service = agent(config(broker, f"synthetic://conveyor?seed=7&fps=20&frames={frames}"))
        node = service.sparkplug
        assert node is not None and node.wait_born(10.0)
        assert wait_until(lambda: node.sent >= 20, 20.0)
        broker.stop()
        time.sleep(2.0)  # ~40 frames inspected and committed while the broker is away
        broker.start()
        service.wait(threading.Event(), duration=30.0)
        assert service.loop is not None and service.loop.finished
        assert wait_until(lambda: node.store.stats().rows == 0, 15.0)
        service.shutdown(timeout=10.0)
        assert wait_until(lambda: kinds(sub)[-1:] == ["NDEATH"], 5.0)
        checker = checked(sub)
    assert checker.violations == [], checker.summary()
    # Mosquitto publishes the will of a client still connected when it shuts down (so the first session's NDEATH
    # may come; its persistent session may deliver it twice); without it the next NBIRTH's bdSeq says it ended
    assert [s.death for s in checker.sessions] in (["lost", "NDEATH"], ["NDEATH", "NDEATH"])
    assert checker.sessions[1].bdseq == (checker.sessions[0].bdseq + 1) % 256
    assert len(set(event_ids(checker))) == frames  # every event; a few may come twice (sent, not confirmed)
    second = checker.sessions[1]
    backlog = [p for p in second.ddata if p.metric("Inspection/Captured At").value < second.birth_ms]
    assert len(backlog) >= 10
    assert all(m.is_historical for p in backlog for m in p.metrics)
    live = [p for p in second.ddata if p not in backlog]
    assert live and not any(m.is_historical for p in live for m in p.metrics)
    # the node says how much waited (NBIRTH's Health/Backlog) and when it caught up (NDATA Health/Backlog 0)
    births = [r.payload.values()["Health/Backlog"] for r in checker.messages if r.kind == "NBIRTH"]
    assert births[-1] >= len(backlog) // 2
    assert [r.payload.values() for r in checker.messages if r.kind == "NDATA"][-1] == {"Health/Backlog": 0}


def test_a_restart_takes_the_next_bdseq_and_sends_what_the_store_kept_as_historical(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector],
) -> None:
    host = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    host.connect("127.0.0.1", mosquitto.port)
    host.loop_start()
    state_topic, t0 = "spBv1.0/STATE/scada2", int(time.time() * 1000)
    host.publish(state_topic, _state(False, t0), qos=1, retain=True).wait_for_publish(5)
    sub = collector(mosquitto.url, "spBv1.0/#")
    first = AgentService(config(mosquitto, "synthetic://conveyor?seed=8&fps=0&frames=10", primary_host_id="scada2"))
    first.start()
    first.wait(threading.Event(), duration=20.0)
    first.shutdown(timeout=5.0)  # the host never came online: 10 events stay in the store
    host.publish(state_topic, _state(True, t0 + 1), qos=1, retain=True).wait_for_publish(5)
    second = AgentService(config(mosquitto, "synthetic://conveyor?seed=9&fps=0&frames=5", primary_host_id="scada2"))
    second.start()
    try:
        node = second.sparkplug
        assert node is not None and node.wait_born(10.0)
        second.wait(threading.Event(), duration=20.0)
        assert wait_until(lambda: node.store.stats().rows == 0, 10.0)
    finally:
        second.shutdown(timeout=5.0)
        host.publish(state_topic, b"", qos=1, retain=True).wait_for_publish(5)
        host.disconnect()
        host.loop_stop()
    assert wait_until(lambda: kinds(sub)[-1:] == ["NDEATH"], 5.0)
    checker = checked(sub)
    assert checker.violations == [], checker.summary()
    assert [s.bdseq for s in checker.sessions] == [1]  # the first run's connection had bdSeq 0 (never born)
    # the first run's 10, and any of the second run's 5 frames committed before its NBIRTH (on a loaded box: 1)
    assert 10 <= checker.messages[0].payload.values()["Health/Backlog"] <= 15
    data = checker.ddata()
    assert len({p.values()["Inspection/Event Id"] for p in data}) == 15
    assert [all(m.is_historical for m in p.metrics) for p in data[:10]] == [True] * 10


def test_a_reload_kills_a_removed_camera_s_device_and_births_an_added_one(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector],
    agent: Callable[[AgentConfig], AgentService],
) -> None:
    sub = collector(mosquitto.url, "spBv1.0/#")
    cfg = config(mosquitto, "synthetic://conveyor?seed=10&fps=10&frames=30&width=320&height=240")
    belt2 = CameraConfig(id="belt2", source="synthetic://conveyor?seed=11&fps=10&frames=30&width=320&height=240")
    cfg = cfg.model_copy(update={"cameras": [*cfg.cameras, belt2]})
    service = agent(cfg)
    node = service.sparkplug
    assert node is not None and node.wait_born(10.0)
    assert wait_until(lambda: node.sent >= 6, 20.0)
    belt3 = CameraConfig(id="belt3", source="synthetic://conveyor?seed=12&fps=10&frames=10&width=320&height=240")
    assert service.reload(cfg.model_copy(update={"cameras": [cfg.cameras[0], belt3]})).applied
    service.wait(threading.Event(), duration=30.0)
    service.shutdown(timeout=10.0)
    assert wait_until(lambda: kinds(sub)[-1:] == ["NDEATH"], 5.0)
    checker = checked(sub)
    assert checker.violations == [], checker.summary()
    deaths = [r.device for r in checker.messages if r.kind == "DDEATH"]
    births = [r.device for r in checker.messages if r.kind == "DBIRTH"]
    assert deaths == ["belt2"] and births[:2] == ["belt", "belt2"] and "belt3" in births
    ddata = [r.device for r in checker.messages if r.kind == "DDATA"]
    assert ddata.count("belt3") == 10


def test_over_mqtt_3_1_1_too(mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector],
                             agent: Callable[[AgentConfig], AgentService]) -> None:
    sub = collector(mosquitto.url, "spBv1.0/#")
    cfg = config(mosquitto, "synthetic://conveyor?seed=13&fps=0&frames=10&width=320&height=240")
    cfg = cfg.model_copy(update={"mqtt": MqttConfig(url=mosquitto.url, protocol="3.1.1")})
    service = agent(cfg)
    node = service.sparkplug
    assert node is not None and node.wait_born(10.0)
    service.wait(threading.Event(), duration=20.0)
    service.shutdown(timeout=10.0)
    assert wait_until(lambda: kinds(sub)[-1:] == ["NDEATH"], 5.0)
    checker = checked(sub)
    assert checker.violations == [], checker.summary()
    assert len(set(event_ids(checker))) == 10 and len(checker.sessions) == 1
