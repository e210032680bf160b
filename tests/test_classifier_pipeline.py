"""The shipped classifier as the agent's prefilter: FrameInspector on the synthetic conveyor, and the whole
service (factory, triage, events without boxes) against a real Mosquitto."""

from __future__ import annotations

import collections
import datetime
import json
import pathlib
import threading
import time
from collections.abc import Callable

import pytest

from agent.capture.synthetic import ConveyorScene
from agent.config.models import AgentConfig, CameraConfig, ModelConfig, MqttConfig, TriageConfig
from agent.core.frame import Frame
from agent.errors import ConfigError
from agent.prefilter.classifier import ImageClassifier
from agent.prefilter.factory import open_prefilter
from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_payload
from agent.runtime.inspector import FrameInspector
from agent.runtime.service import AgentService
from tests.conftest import MqttCollector

SHIPPED = pathlib.Path(__file__).resolve().parents[1] / "models" / "conveyor-resnet-cls.int8.onnx"


def test_frame_inspector_with_the_shipped_classifier() -> None:
    config = AgentConfig(device_id="box1", cameras=[CameraConfig(id="belt", source="synthetic://conveyor")],
                         model=ModelConfig(path=SHIPPED, intra_op_threads=1))
    prefilter = open_prefilter(config.model.path, config.model)
    assert isinstance(prefilter, ImageClassifier)
    inspector = FrameInspector(config, prefilter)
    scene = ConveyorScene(seed=5)
    agreement: collections.Counter[tuple[str, str]] = collections.Counter()
    for sequence in range(1, 61):
        image, truth = scene.next_frame()
        frame = Frame(camera_id="belt", sequence=sequence, captured_at=datetime.datetime.now(datetime.timezone.utc),
                      monotonic=time.monotonic(), image=image, truth=truth)
        ins = inspector.inspect(frame)
        assert ins.result.task == "classify" and len(ins.result.probabilities) == 5
        payload = ins.event.to_payload()
        assert validate_payload(json.loads(json.dumps(payload))) == [], payload
        assert all("box" not in t for t in payload["tags"])
        assert payload["prefilter"]["model"].startswith("conveyor-resnet-cls.int8@")
        if ins.decision.verdict == "defect":
            assert [t.state for t in ins.decision.tags] == ["accepted"]
        agreement[(truth.verdict, ins.event.verdict)] += 1
    decided = sum(n for (_, v), n in agreement.items() if v != "uncertain")
    right = agreement[("pass", "pass")] + agreement[("defect", "defect")]
    assert decided >= 30, agreement  # most frames are decided on the spot
    assert right >= 0.85 * decided, agreement


def test_service_runs_the_classifier_end_to_end(mosquitto: LocalMosquitto,
                                                collector: Callable[..., MqttCollector]) -> None:
    frames = 25
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    config = AgentConfig(device_id="box1", mqtt=MqttConfig(url=mosquitto.url),
                         cameras=[CameraConfig(id="belt", source=f"synthetic://conveyor?seed=8&fps=0&frames={frames}")],
                         model=ModelConfig(path=SHIPPED))
    service = AgentService(config)
    service.start()
    assert service.publisher.wait_connected(10.0)
    service.wait(threading.Event(), duration=60.0)
    summary = service.shutdown(timeout=10.0)
    messages = sub.wait_for(frames, timeout=10.0)
    assert len(messages) == frames and summary.flushed
    for m in messages:
        doc = json.loads(m.payload)
        assert validate_payload(doc) == [] and all("box" not in t for t in doc["tags"])
        assert doc["prefilter"]["model"].startswith("conveyor-resnet-cls.int8@")
    assert sum(summary.verdicts.values()) == frames


def test_a_pass_label_the_classifier_does_not_know_is_a_config_error() -> None:
    config = AgentConfig(device_id="box1", model=ModelConfig(path=SHIPPED),
                         cameras=[CameraConfig(id="belt", source="synthetic://conveyor",
                                               triage=TriageConfig(pass_label="ok"))])
    service = AgentService(config)
    with pytest.raises(ConfigError, match=r"cameras\[0\].triage.pass_label: 'ok' is not a class of the classifier"):
        service.start()
    assert service.grabbers == []  # nothing was opened
