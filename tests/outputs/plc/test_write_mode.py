"""``mode: write`` against real PLC servers: every event's result written (sequence last), the counters add up,
the status names the connection; a refused write is counted, logged and error 4 is written."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from agent.config.models import AgentConfig, CameraConfig, MetricsConfig, MqttConfig
from agent.config.plc import CameraPlcConfig, PlcConfig
from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_stats, validate_status
from agent.runtime.service import AgentService
from tests.conftest import MqttCollector
from tests.outputs.plc.agent_setup import connection
from tests.outputs.plc.plcs import ModbusPlc, OpcUaPlc, free_port

WRITE_MAP = {"modbus": {"result_ok": "coil:4", "result_ng": "coil:5", "error": "coil:6", "verdict": "hr:0",
                        "defect_code": "hr:1", "sequence": "hr:2", "pass_count": "hr:4", "ng_count": "hr:6",
                        "error_code": "hr:8", "event_id": "hr:10/18"}}
WRITE_MAP["opcua"] = {signal: f"ns=2;s=Cam1.{signal}" for signal in WRITE_MAP["modbus"]}
FRAMES = 25


def config(broker: LocalMosquitto, protocol: str, port: int, mapping: dict[str, str]) -> AgentConfig:
    plc = CameraPlcConfig(connection="line", mode="write", map=mapping)
    camera = CameraConfig(id="cam1", source=f"synthetic://conveyor?seed=2&fps=0&frames={FRAMES}", plc=plc)
    return AgentConfig(device_id="box1", cameras=[camera], mqtt=MqttConfig(url=broker.url, stats_interval_s=0),
                       plc=PlcConfig(connections={"line": connection(protocol, port)}),
                       metrics=MetricsConfig(listen="127.0.0.1:0"))


@pytest.mark.parametrize("protocol", ["modbus", "opcua"])
def test_every_event_is_written_and_the_counters_add_up(
        protocol: str, mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector]) -> None:
    mapping = WRITE_MAP[protocol]
    plc = (ModbusPlc(mapping) if protocol == "modbus" else OpcUaPlc(mapping)).start()
    status = collector(mosquitto.url, "edge/box1/status")
    try:
        service = AgentService(config(mosquitto, protocol, plc.port, mapping))
        service.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(_plc_up(m.payload) for m in status.messages):
            time.sleep(0.05)
        assert any(_plc_up(m.payload) for m in status.messages), "the status says when the PLC connection is up"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (service.loop is not None and service.loop.finished):
            time.sleep(0.05)
        stats_doc = service.stats_document()
        service.shutdown(timeout=5.0)
        cam = service.plc.stats().cameras[0]
        assert cam.results_written == FRAMES and cam.results_dropped == cam.results_unwritten == 0
        assert plc.read("sequence") == FRAMES
        assert int(plc.read("pass_count")) + int(plc.read("ng_count")) <= FRAMES  # uncertain frames: neither
        assert len(str(plc.read("event_id"))) == 36 and plc.read("error_code") == 0
        assert validate_stats(json.loads(json.dumps(stats_doc))) == [] and stats_doc["plc"]["cam1"]["mode"] == "write"
        assert all(validate_status(json.loads(m.payload)) == [] for m in status.messages)
    finally:
        plc.stop()


def _plc_up(payload: bytes) -> bool:
    doc = json.loads(payload)
    return doc.get("state") == "online" and bool(doc.get("plc", {}).get("line", {}).get("connected"))


def test_a_refused_write_is_counted_and_error_4_written(
        mosquitto: LocalMosquitto, caplog: pytest.LogCaptureFixture) -> None:
    mapping = {**WRITE_MAP["modbus"], "defect_code": "hr:5000"}  # past the PLC's 1000 registers
    plc = ModbusPlc(mapping).start()
    try:
        service = AgentService(config(mosquitto, "modbus", plc.port, mapping))
        service.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (service.loop is not None and service.loop.finished):
            time.sleep(0.05)
        service.shutdown(timeout=5.0)
        cam = service.plc.stats().cameras[0]
        assert cam.results_unwritten == FRAMES and cam.results_written == 0
        assert cam.errors == {"WRITE_REFUSED": FRAMES}
        assert plc.read("error") is True and plc.read("error_code") == 4
        refusals = [r for r in caplog.records if "illegal data address" in r.getMessage()]
        assert len(refusals) == 1, "once a minute per cause, not per result"
        assert "defect_code at hr:5000" in refusals[0].getMessage()
    finally:
        plc.stop()


def test_results_while_the_plc_is_away_wait_in_a_bounded_queue_then_error_6(mosquitto: LocalMosquitto) -> None:
    """25 results while the PLC is away, a queue of 5: the 20 oldest dropped and counted; once the PLC is there
    the 5 kept are written with their own numbers (21..25: the gap shows the drop), then error 6."""
    mapping = WRITE_MAP["modbus"]
    port = free_port()
    cfg = config(mosquitto, "modbus", port, mapping)
    cfg = cfg.model_copy(update={"plc": cfg.plc.model_copy(update={"queue": 5})})
    service = AgentService(cfg)
    service.start()
    plc = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (service.loop is not None and service.loop.finished):
            time.sleep(0.05)
        cam = service.plc.stats().cameras[0]
        assert (cam.results_dropped, cam.results_written, cam.connected) == (FRAMES - 5, 0, False)
        assert service.publisher.flush(10.0), "the MQTT side is not held up by the PLC"
        plc = ModbusPlc(mapping, port).start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and plc.read("error_code") != 6:
            time.sleep(0.05)
        assert plc.read("sequence") == FRAMES and plc.read("error") is True and plc.read("error_code") == 6
        cam = service.plc.stats().cameras[0]
        assert cam.results_written == 5 and cam.errors == {"QUEUE_FULL": FRAMES - 5}
    finally:
        service.shutdown(timeout=5.0)
        if plc is not None:
            plc.stop()
