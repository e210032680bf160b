"""An uncertain frame's image follows its escalation: a real agent run (video file, shipped model, escalation
thread, real gRPC gateway, fake Ollama answering from the scene's truth, real Mosquitto). Every event that names
an image has it on disk, and the index holds each image's event as last published: the VLM's answer and the
verdict it gave (an uncertain frame the VLM called good is a pass there)."""

from __future__ import annotations

import json
import pathlib
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from agent.capture.synthetic import DEFECT_CLASSES
from agent.config.models import AgentConfig
from agent.core.frame import FrameTruth
from agent.outputs.images.store import ImageStore, Query
from agent.publish.local_broker import LocalMosquitto
from agent.runtime.service import AgentService
from tests.conftest import MqttCollector
from tests.fakes.gateway import GatewayThread, gateway_config
from tests.fakes.ollama import FakeOllama
from tests.fakes.vlm_oracle import TruthOracle


@pytest.fixture
def oracle_gateway(scene_frames: list[tuple[np.ndarray, FrameTruth]]) -> Iterator[GatewayThread]:
    oracle = TruthOracle([image for image, _ in scene_frames],
                         [frozenset(d.label for d in truth.defects) for _, truth in scene_frames], DEFECT_CLASSES)
    with FakeOllama(answer_fn=oracle) as fake, GatewayThread(gateway_config(fake.url)) as gateway:
        yield gateway


def test_escalated_frames_images_carry_the_vlms_answer(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], video_file: pathlib.Path,
        scene_frames: list[tuple[np.ndarray, FrameTruth]], oracle_gateway: GatewayThread,
        tmp_path: pathlib.Path) -> None:
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    config = AgentConfig.model_validate({
        "device_id": "box1", "cameras": [{"id": "belt", "source": str(video_file)}],
        "mqtt": {"url": mosquitto.url, "stats_interval_s": 0}, "metrics": {"enabled": False},
        "escalation": {"gateway": oracle_gateway.address, "rate_per_camera": {"per_minute": 60_000, "burst": 1000},
                       "dedupe": {"enabled": False}},
        "images": {"enabled": True, "dir": str(tmp_path / "images"), "min_free_bytes": 0}})
    service = AgentService(config)
    service.start()
    assert service.publisher.wait_connected(10.0)
    service.wait(threading.Event(), duration=30.0)
    service.shutdown(timeout=15.0)

    docs = [json.loads(m.payload) for m in sub.wait_for(len(scene_frames), timeout=10.0)]
    latest: dict[str, dict[str, object]] = {}
    for doc in sorted(docs, key=lambda d: d["revision"]):
        latest[doc["event_id"]] = doc
    named = {i: d for i, d in latest.items() if "image" in d}
    answered = [d for d in named.values() if d["escalation"]["status"] == "answered"]  # type: ignore[index]
    assert answered, [d["escalation"] for d in latest.values()]
    store = ImageStore.open(tmp_path / "images", create=False, repair=False)
    rows = {r.event_id: r for r in store.rows(Query())}
    store.close()
    assert rows.keys() == named.keys()  # every event that names an image has it; no other image was kept
    for event_id, doc in named.items():
        row = rows[event_id]
        assert (tmp_path / "images" / row.path).is_file() and doc["image"] == {"id": event_id, "path": row.path}
        assert row.payload == doc and row.verdict == doc["verdict"]  # the event as last published
    # the frames kept were the ones the prefilter called defect or uncertain
    assert {d["verdict"] for d in latest.values() if "image" not in d} <= {"pass"}
