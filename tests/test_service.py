"""The whole agent end to end: real video and synthetic cameras, the shipped ONNX model,
a real Mosquitto, and an independent subscriber checking what went over the wire."""

from __future__ import annotations

import collections
import json
import pathlib
import socket
import threading
import time
from collections.abc import Callable

import pytest

from agent.config.models import AgentConfig, CameraConfig, ModelConfig, MqttConfig
from agent.errors import ModelError, SourceError
from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_payload, validate_stats
from agent.runtime.service import AgentService
from tests.conftest import VIDEO_FRAMES, MqttCollector


def config_for(broker: LocalMosquitto, *cameras: CameraConfig, **kw: object) -> AgentConfig:
    return AgentConfig(device_id="box1", cameras=list(cameras), mqtt=MqttConfig(url=broker.url), **kw)  # type: ignore[arg-type]


def run_to_end(service: AgentService, timeout: float = 60.0) -> None:
    service.start()
    assert service.publisher.wait_connected(10.0), "publisher did not connect"
    service.wait(threading.Event(), duration=timeout)
    assert service.loop is not None and service.loop.finished, "sources did not end in time"


def payloads_by_camera(messages: list) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    out: dict[str, list[dict]] = collections.defaultdict(list)  # type: ignore[type-arg]
    for m in messages:
        doc = json.loads(m.payload)
        out[doc["camera"]].append(doc)
    return out


def test_n_frames_in_n_schema_valid_events_out_in_order_per_camera(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], video_file: pathlib.Path
) -> None:
    synthetic_frames = 30
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    cfg = config_for(
        mosquitto,
        CameraConfig(id="file1", source=str(video_file)),
        CameraConfig(id="belt2", source=f"synthetic://conveyor?seed=4&fps=0&frames={synthetic_frames}"),
    )
    service = AgentService(cfg)
    run_to_end(service)
    summary = service.shutdown(timeout=10.0)

    total = VIDEO_FRAMES + synthetic_frames
    messages = sub.wait_for(total, timeout=10.0)
    assert len(messages) == total
    by_cam = payloads_by_camera(messages)
    assert [p["sequence"] for p in by_cam["file1"]] == list(range(1, VIDEO_FRAMES + 1))
    assert [p["sequence"] for p in by_cam["belt2"]] == list(range(1, synthetic_frames + 1))
    for m in messages:
        assert m.topic.startswith("edge/box1/") and m.qos == 1
        doc = json.loads(m.payload)
        assert validate_payload(doc) == [], doc
    assert len({json.loads(m.payload)["event_id"] for m in messages}) == total
    assert summary.flushed and summary.publisher.acked == total and summary.publisher.dropped == 0
    assert summary.inspected == {"file1": VIDEO_FRAMES, "belt2": synthetic_frames}
    assert sum(summary.verdicts.values()) == total


def test_shipped_model_gives_all_three_verdicts_on_the_conveyor(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector]
) -> None:
    frames = 150
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    service = AgentService(config_for(
        mosquitto, CameraConfig(id="belt", source=f"synthetic://conveyor?seed=11&fps=0&frames={frames}")))
    run_to_end(service, timeout=90.0)
    service.shutdown()
    docs = [json.loads(m.payload) for m in sub.wait_for(frames, timeout=10.0)]
    verdicts = collections.Counter(d["verdict"] for d in docs)
    assert set(verdicts) == {"pass", "defect", "uncertain"}, verdicts
    for d in docs:
        status = d["escalation"]["status"]
        # no gateway yet: uncertain frames say so, decided ones did not need one
        assert status == ("unavailable" if d["verdict"] == "uncertain" else "not_needed")
        assert d["decided_by"] == "prefilter" and d["prefilter"]["model"].startswith("conveyor-yolov8n.int8@")
        if d["verdict"] == "defect":
            assert any(t["state"] == "accepted" for t in d["tags"])


def test_corrupt_video_frames_are_counted_and_skipped(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], corrupt_video: pathlib.Path
) -> None:
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    service = AgentService(config_for(mosquitto, CameraConfig(id="bad", source=str(corrupt_video))))
    run_to_end(service)
    summary = service.shutdown()
    cam = summary.cameras["bad"]
    assert cam.corrupt > 0 and cam.delivered > 0
    assert cam.frames_read == cam.delivered + cam.corrupt == VIDEO_FRAMES
    docs = [json.loads(m.payload) for m in sub.wait_for(cam.delivered, timeout=10.0)]
    assert len(docs) == cam.delivered == summary.inspected["bad"]
    seqs = [d["sequence"] for d in docs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # gaps where frames were corrupt


def test_unreachable_camera_reconnects_while_the_others_run(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    states: list[tuple[str, str]] = []
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    cfg = config_for(
        mosquitto,
        CameraConfig(id="gone", source=f"rtsp://127.0.0.1:{dead_port}/cam", reconnect_initial_s=0.2,
                     reconnect_max_s=0.5),
        CameraConfig(id="belt", source="synthetic://conveyor?seed=2&fps=0&frames=10"),
    )
    service = AgentService(cfg, on_camera_state=lambda cam, state, _reason: states.append((cam, state)))
    service.start()
    try:
        assert len(sub.wait_for(10, timeout=30.0)) == 10
        # "reconnecting" is reported when the first attempt fails; the reconnect count goes up when the next
        # attempt starts, after the backoff (an attempt may take seconds on a loaded box)
        deadline = time.monotonic() + 30
        while service.summary().cameras["gone"].reconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ("gone", "reconnecting") in states
    finally:
        started = time.monotonic()
        summary = service.shutdown(timeout=10.0)
    assert time.monotonic() - started < 10
    assert summary.cameras["gone"].reconnects >= 1 and summary.cameras["gone"].last_error
    assert "127.0.0.1" in (summary.cameras["gone"].last_error or "")


def test_missing_model_fails_before_any_camera_or_broker_is_touched(tmp_path: pathlib.Path) -> None:
    cfg = AgentConfig(cameras=[CameraConfig(id="c", source="synthetic://conveyor")],
                      model=ModelConfig(path=tmp_path / "nope.onnx"), mqtt=MqttConfig(url="mqtt://127.0.0.1:1"))
    service = AgentService(cfg)
    with pytest.raises(ModelError, match="nope.onnx does not exist"):
        service.start()
    assert service.grabbers == [] and service.loop is None


def test_bad_camera_spec_fails_before_the_broker_is_contacted() -> None:
    cfg = AgentConfig(cameras=[CameraConfig(id="c", source="ftp://camera/stream")],
                      mqtt=MqttConfig(url="mqtt://127.0.0.1:1"))
    service = AgentService(cfg)
    with pytest.raises(SourceError, match="ftp"):
        service.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = service.publisher


def test_periodic_stats_topic_reports_cameras_and_outbox(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector]
) -> None:
    stats = collector(mosquitto.url, "edge/box1/stats")
    cfg = AgentConfig(device_id="box1", cameras=[CameraConfig(id="belt", source="synthetic://conveyor?fps=10")],
                      mqtt=MqttConfig(url=mosquitto.url, stats_interval_s=0.5))
    service = AgentService(cfg)
    service.start()
    try:
        got = stats.wait_for(3, timeout=15)
    finally:
        service.shutdown()
    assert len(got) == 3
    last = json.loads(got[-1].payload)
    assert last["device"] == "box1" and last["inspected"]["belt"] > 0
    assert last["cameras"]["belt"]["state"] == "online"
    assert {"committed", "acked", "evicted", "pending", "redelivered"} <= set(last["publisher"])
    assert last["publisher"]["evicted"] == 0
    for message in got:  # the contract: proto/mqtt/stats.v1.schema.json
        assert validate_stats(json.loads(message.payload)) == [], message.payload
    # and the schema is no blank cheque: a counter gone, a wrong type, a field not in the contract
    broken = {**last, "uptime_s": "long", "surprise": 1}
    del broken["cameras"]["belt"]["frames_read"]
    problems = validate_stats(broken)
    assert any("uptime_s" in p for p in problems) and any("surprise" in p for p in problems)
    assert any("frames_read" in p for p in problems), problems
    # the broker-limit counters are named in the contract too: a dead-letter cause is a [cause, rows] pair
    last = json.loads(got[-1].payload)
    assert {"dead_lettered", "dead_by_cause", "snapshots_shrunk", "snapshots_dropped"} <= set(last["publisher"])
    assert validate_stats({**last, "publisher": {**last["publisher"], "dead_by_cause": [["too_large", 3]]}}) == []
    problems = validate_stats({**last, "publisher": {**last["publisher"], "dead_by_cause": [["too_large", -1]],
                                                     "snapshots_shrunk": "many"}})
    assert any("dead_by_cause" in p for p in problems) and any("snapshots_shrunk" in p for p in problems), problems


def test_mqtt_311_works_through_the_outbox(mosquitto: LocalMosquitto,
                                           collector: Callable[..., MqttCollector]) -> None:
    sub = collector(mosquitto.url, "edge/old-box/+/tags")
    cfg = AgentConfig(device_id="old-box", cameras=[CameraConfig(id="belt", source="synthetic://conveyor?fps=0&frames=6")],
                      mqtt=MqttConfig(url=mosquitto.url, protocol="3.1.1"))
    service = AgentService(cfg)
    run_to_end(service)
    summary = service.shutdown()
    assert [json.loads(m.payload)["sequence"] for m in sub.wait_for(6)] == [1, 2, 3, 4, 5, 6]
    assert summary.flushed and summary.publisher.acked == 6
