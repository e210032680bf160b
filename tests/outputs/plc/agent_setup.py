"""An agent with one handshake camera (and optionally a free-running one) on a real PLC server: the config."""

from __future__ import annotations

from typing import Any

from agent.config.models import AgentConfig, CameraConfig, MetricsConfig, MqttConfig, TriageConfig
from agent.config.plc import CameraPlcConfig, PlcConfig, PlcConnectionConfig

MODBUS_MAP = {"trigger": "coil:0", "trigger_ready": "coil:1", "result_ready": "coil:2", "result_ack": "coil:3",
              "result_ok": "coil:4", "result_ng": "coil:5", "error": "coil:6",
              "verdict": "hr:0", "defect_code": "hr:1", "sequence": "hr:2", "pass_count": "hr:4", "ng_count": "hr:6",
              "error_code": "hr:8", "event_id": "hr:10/18"}
OPCUA_MAP = {signal: f"ns=2;s=Cam1.{signal}" for signal in MODBUS_MAP}
MAPS = {"modbus": MODBUS_MAP, "opcua": OPCUA_MAP}


def connection(protocol: str, port: int, **kw: Any) -> PlcConnectionConfig:
    fast = {"reconnect_initial_s": 0.1, "reconnect_max_s": 0.5, "poll_interval_s": 0.002, **kw}
    if protocol == "modbus":
        return PlcConnectionConfig(protocol="modbus", host="127.0.0.1", port=port, **fast)
    return PlcConnectionConfig(protocol="opcua", endpoint=f"opc.tcp://127.0.0.1:{port}/plc", **fast)


def agent_config(broker_url: str, protocol: str, port: int, *, free_camera: bool = False, ack_timeout_s: float = 2.0,
                 triage: TriageConfig | None = None, **camera_kw: Any) -> AgentConfig:
    plc = CameraPlcConfig(connection="line", mode="handshake", map=MAPS[protocol], ack_timeout_s=ack_timeout_s,
                          result_timeout_s=5.0, **camera_kw)
    cameras = [CameraConfig(id="cam1", source="synthetic://conveyor?seed=3&fps=60", realtime=True, plc=plc)]
    if free_camera:  # inspected all along, whatever the PLC does
        cameras.append(CameraConfig(id="cam2", source="synthetic://conveyor?seed=5&fps=10", realtime=True))
    return AgentConfig(device_id="box1", cameras=cameras, mqtt=MqttConfig(url=broker_url, stats_interval_s=0),
                       plc=PlcConfig(connections={"line": connection(protocol, port)}),
                       triage=triage or TriageConfig(), metrics=MetricsConfig(listen="127.0.0.1:0"))
