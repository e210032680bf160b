"""A real agent run records: video file -> agent (shipped model, triage, escalation thread) -> real gRPC gateway
-> fake Ollama answering from the scene's ground truth (TruthOracle) -> outbox -> real Mosquitto; the recorder
writes the frames the VLM answered, and the export reads them back as a YOLO dataset."""

from __future__ import annotations

import collections
import json
import pathlib
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from agent.capture.synthetic import DEFECT_CLASSES
from agent.config.models import AgentConfig
from agent.core.frame import FrameTruth
from agent.dataset.record import DatasetRecord
from agent.publish.local_broker import LocalMosquitto
from agent.runtime.service import AgentService
from agent.tooling.dataset.export import ExportOptions, export_dataset
from agent.tooling.evaluation.dataset import read_yolo_dataset
from tests.conftest import MqttCollector
from tests.fakes.gateway import GatewayThread, gateway_config
from tests.fakes.ollama import FakeOllama
from tests.fakes.vlm_oracle import TruthOracle


@pytest.fixture
def oracle_gateway(scene_frames: list[tuple[np.ndarray, FrameTruth]]) -> Iterator[tuple[GatewayThread, TruthOracle]]:
    oracle = TruthOracle([image for image, _ in scene_frames],
                         [frozenset(d.label for d in truth.defects) for _, truth in scene_frames], DEFECT_CLASSES)
    with FakeOllama(answer_fn=oracle) as fake, GatewayThread(gateway_config(fake.url)) as gateway:
        yield gateway, oracle


def test_an_agent_run_records_the_answered_frames_and_they_export(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], video_file: pathlib.Path,
        scene_frames: list[tuple[np.ndarray, FrameTruth]], oracle_gateway: tuple[GatewayThread, TruthOracle],
        tmp_path: pathlib.Path) -> None:
    gateway, oracle = oracle_gateway
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    config = AgentConfig.model_validate({
        "device_id": "box1", "cameras": [{"id": "belt", "source": str(video_file), "record": True}],
        "mqtt": {"url": mosquitto.url, "stats_interval_s": 0}, "metrics": {"enabled": False},
        "escalation": {"gateway": gateway.address, "rate_per_camera": {"per_minute": 60_000, "burst": 1000},
                       "dedupe": {"enabled": False}},
        "dataset": {"dir": str(tmp_path / "rec"), "confident_sample": 0.0}})
    service = AgentService(config)
    service.start()
    assert service.publisher.wait_connected(10.0)
    service.wait(threading.Event(), duration=30.0)
    summary = service.shutdown(timeout=15.0)
    assert service.recorder is not None
    stats = service.recorder.stats()

    docs = [json.loads(m.payload) for m in sub.wait_for(len(scene_frames), timeout=10.0)]
    statuses = collections.Counter(d["escalation"]["status"] for d in docs if d["revision"] == 1)
    answered = {d["sequence"]: d for d in docs if d["escalation"]["status"] == "answered"}
    assert sum(summary.inspected.values()) == len(scene_frames) and answered, statuses
    folder = tmp_path / "rec" / "records"
    records = [DatasetRecord.from_dict(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
    # exactly the frames the VLM answered, each once, with what the event said and the full frame
    assert sorted(r.sequence for r in records) == sorted(answered)
    assert stats.recorded == {"escalated": len(records), "confident_sample": 0}
    assert stats.dropped == {"queue_full": 0, "pending_full": 0, "model_changed": 0} and stats.pending == 0
    for record in records:
        event = answered[record.sequence]
        truth = frozenset(d.label for d in scene_frames[record.sequence - 1][1].defects)
        assert record.vlm is not None and record.event_id == event["event_id"]
        assert record.vlm.verdict == ("defect" if truth else "pass")
        assert {label for label, _ in record.vlm.tags} - {"part"} == truth  # the oracle's truth
        assert (record.width, record.height) == (320, 240) and record.names == DEFECT_CLASSES
        assert record.model_id == event["prefilter"]["model"] and record.model_digest is not None
        assert [t.label for t in record.tags] == [t["label"] for t in event["tags"] if t["source"] == "prefilter"]
    assert oracle.asked == len(records)

    summary_export = export_dataset(ExportOptions(tmp_path / "rec", tmp_path / "out", "yolo", split_gap_s=0.0))
    exported = sum(len(read_yolo_dataset(tmp_path / "out" / "data.yaml", split).images) for split in ("train", "val"))
    assert exported == sum(summary_export.images.values()) == len(records) - summary_export.excluded


def test_a_reload_turns_recording_on_and_off_for_a_running_camera(
        mosquitto: LocalMosquitto, oracle_gateway: tuple[GatewayThread, TruthOracle], tmp_path: pathlib.Path) -> None:
    gateway, _oracle = oracle_gateway

    def config(record: bool) -> AgentConfig:
        return AgentConfig.model_validate({
            "device_id": "box1", "cameras": [{"id": "belt", "source": "synthetic://conveyor?seed=2&fps=5",
                                              "record": record}],
            "mqtt": {"url": mosquitto.url, "stats_interval_s": 0}, "metrics": {"enabled": False},
            "escalation": {"gateway": gateway.address}, "dataset": {"dir": str(tmp_path / "rec")}})

    service = AgentService(config(False))
    service.start()
    try:
        assert service.recorder is None and not (tmp_path / "rec").exists()  # off: no folder, no thread
        grabber = service.grabbers[0]
        result = service.reload(config(True))
        assert result.applied and result.plan is not None and result.plan.retuned == ("belt",)
        assert service.recorder is not None and service.recorder.cameras == {"belt"}
        assert (tmp_path / "rec" / "records").is_dir() and service.grabbers[0] is grabber  # the camera ran on
        assert service.stats_document()["dataset"]["recorded"] == {"escalated": 0, "confident_sample": 0}
        service.reload(config(False))
        assert service.recorder.cameras == frozenset()
    finally:
        service.shutdown(timeout=10.0)
