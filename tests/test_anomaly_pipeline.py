"""An anomaly model as the agent's prefilter: the whole service (factory, triage's anomaly band, events whose
``anomaly`` tags have boxes, the retained status naming the task) against a real Mosquitto."""

from __future__ import annotations

import json
import pathlib
import threading
from collections.abc import Callable

from agent.config.models import AgentConfig, CameraConfig, ModelConfig, MqttConfig
from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_payload, validate_status
from agent.runtime.service import AgentService
from tests.conftest import MqttCollector
from tests.prefilter.onnx_builders import brightness_anomaly_model


def test_service_runs_an_anomaly_model_end_to_end(tmp_path: pathlib.Path, mosquitto: LocalMosquitto,
                                                  collector: Callable[..., MqttCollector]) -> None:
    frames = 20
    # the brightness model at threshold 0.45: the conveyor's bright parts are its "anomalies"
    model = brightness_anomaly_model(tmp_path / "bright.onnx", 96, 128, metadata={"threshold": "0.45"})
    tags = collector(mosquitto.url, "edge/box1/+/tags")
    status = collector(mosquitto.url, "edge/box1/status")
    config = AgentConfig(device_id="box1", mqtt=MqttConfig(url=mosquitto.url),
                         cameras=[CameraConfig(id="belt", source=f"synthetic://conveyor?seed=3&fps=0&frames={frames}")],
                         model=ModelConfig(path=model))
    service = AgentService(config)
    service.start()
    assert service.publisher.wait_connected(10.0)
    service.wait(threading.Event(), duration=60.0)
    summary = service.shutdown(timeout=10.0)
    messages = tags.wait_for(frames, timeout=10.0)
    assert len(messages) == frames and summary.flushed
    boxes = 0
    for m in messages:
        doc = json.loads(m.payload)
        assert validate_payload(doc) == [], doc
        assert doc["prefilter"]["model"].startswith("bright@")
        prefilter_tags = [t for t in doc["tags"] if t["source"] == "prefilter"]
        assert all(t["label"] == "anomaly" for t in prefilter_tags)
        if doc["verdict"] == "pass":
            assert prefilter_tags == []
        boxes += sum("box" in t for t in prefilter_tags)
    assert boxes > 0  # the parts' regions came through as boxes
    online = [json.loads(m.payload) for m in status.wait_for(1, timeout=5.0)]
    assert any(doc.get("model", {}).get("task") == "anomaly" and validate_status(doc) == [] for doc in online), online
