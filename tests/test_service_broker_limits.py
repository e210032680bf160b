"""The whole agent against a Mosquitto with ``max_packet_size``: a synthetic camera, snapshots for every
verdict stored in the outbox. Every tag event arrives, in order; every snapshot arrives re-encoded to fit
(or is counted); the agent is never thrown off the broker."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, cast

from agent.config.models import AgentConfig, CameraConfig, MqttConfig, SnapshotConfig
from agent.publish.local_broker import LocalMosquitto
from agent.runtime.service import AgentService
from tests.conftest import MqttCollector

FRAMES = 24
LIMIT = 6000  # below the synthetic conveyor's snapshots at 640 px, quality 80


def test_snapshots_over_the_broker_limit_do_not_hold_up_a_single_tag_event(
        collector: Callable[..., MqttCollector]) -> None:
    with LocalMosquitto(extra_config=[f"max_packet_size {LIMIT}"]) as broker:
        tags = collector(broker.url, "edge/box1/+/tags")
        snaps = collector(broker.url, "edge/box1/+/snapshot")
        cfg = AgentConfig(device_id="box1", cameras=[CameraConfig(
            id="belt", source=f"synthetic://conveyor?seed=5&fps=0&frames={FRAMES}")],
            mqtt=MqttConfig(url=broker.url, stats_interval_s=0),
            snapshots=SnapshotConfig(enabled=True, verdicts=["pass", "defect", "uncertain"], store_in_outbox=True))
        service = AgentService(cfg)
        service.start()
        try:
            assert service.publisher.wait_connected(10.0)
            service.wait(threading.Event(), duration=60.0)
            assert service.loop is not None and service.loop.finished
            assert service.publisher.flush(30.0), service.publisher.stats()
            stats = service.publisher.stats()
        finally:
            summary = service.shutdown(timeout=10.0)
        got = tags.wait_for(FRAMES, timeout=10.0)
        assert [json.loads(m.payload)["sequence"] for m in got] == list(range(1, FRAMES + 1))  # all, in order
        assert stats.snapshots_shrunk + stats.snapshots_dropped == FRAMES and stats.snapshots_shrunk > 0, stats
        assert len(snaps.wait_for(stats.snapshots_shrunk, timeout=10.0)) == stats.snapshots_shrunk
        assert all(len(m.payload) < LIMIT for m in snaps.messages)
        assert stats.dead_letters == 0 and stats.pending == 0
        assert cast(Any, service.publisher).mqtt.stats().connects == 1  # never disconnected for a packet too large
        assert summary.flushed
