"""``edge-agent doctor``'s PLC rows against real servers: reachable with every address readable, an address
past the PLC's memory or a node that does not exist, and a PLC that is not there."""

from __future__ import annotations

from agent.config.models import AgentConfig, CameraConfig
from agent.config.plc import CameraPlcConfig, PlcConfig
from agent.ops.doctor_plc import check_plcs
from tests.outputs.plc.agent_setup import connection
from tests.outputs.plc.plcs import ModbusPlc, OpcUaPlc, free_port


def config(protocol: str, port: int, mapping: dict[str, str]) -> AgentConfig:
    plc = CameraPlcConfig(connection="line", map=mapping)
    return AgentConfig(cameras=[CameraConfig(id="cam1", source="synthetic://conveyor", plc=plc)],
                       plc=PlcConfig(connections={"line": connection(protocol, port)}))


def test_a_reachable_modbus_plc_with_every_address_readable_and_one_past_its_memory() -> None:
    good = {"verdict": "hr:0", "sequence": "hr:2", "result_ng": "coil:5"}
    plc = ModbusPlc(good).start()
    try:
        [row] = check_plcs(config("modbus", plc.port, good), 5.0)
        assert row.status == "OK" and "3 mapped address(es) of 1 camera(s) readable" in row.detail
        [row] = check_plcs(config("modbus", plc.port, {**good, "defect_code": "hr:5000"}), 5.0)
        assert row.status == "FAIL" and row.detail.startswith("cameras[0].plc.map.defect_code (hr:5000)")
        assert "illegal data address" in row.detail
    finally:
        plc.stop()


def test_an_opcua_node_that_does_not_exist() -> None:
    mapping = {"verdict": "ns=2;s=Cam1.verdict"}
    plc = OpcUaPlc(mapping).start()
    try:
        [row] = check_plcs(config("opcua", plc.port, {**mapping, "sequence": "ns=2;s=Cam1.nope"}), 5.0)
        assert row.status == "FAIL" and "cameras[0].plc.map.sequence (ns=2;s=Cam1.nope)" in row.detail
        assert "BadNodeIdUnknown" in row.detail
    finally:
        plc.stop()


def test_a_plc_that_is_not_there() -> None:
    [row] = check_plcs(config("modbus", free_port(), {"verdict": "hr:0"}), 2.0)
    assert row.status == "FAIL" and "cannot connect" in row.detail
    assert "plc.connections.line.host/port" in row.todo and "reconnects by itself" in row.todo
