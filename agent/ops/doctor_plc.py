"""``edge-agent doctor``'s PLC rows: for each PLC connection a camera writes to, connect with the configured
protocol and read every mapped address once (reads only: nothing on the PLC changes), so an unreachable PLC,
a register past the PLC's memory or an OPC UA node that does not exist shows before the agent runs."""

from __future__ import annotations

from agent.config.models import AgentConfig
from agent.config.plc import PlcConnectionConfig
from agent.ops.check import Check
from agent.outputs.plc.output import open_transport
from agent.outputs.plc.regmap import parse_map
from agent.outputs.plc.transport import PlcRefused, PlcUnreachable

__all__ = ["check_plcs"]


def check_plcs(config: AgentConfig, timeout_s: float) -> list[Check]:
    """One row per PLC connection in use (none when no camera writes to a PLC)."""
    used: dict[str, list[int]] = {}
    for index, cam in enumerate(config.cameras):
        if cam.plc is not None:
            used.setdefault(cam.plc.connection, []).append(index)
    return [_check_one(config, name, indexes, timeout_s) for name, indexes in used.items()]


def _check_one(config: AgentConfig, name: str, indexes: list[int], timeout_s: float) -> Check:
    conn: PlcConnectionConfig = config.plc.connections[name]
    transport = open_transport(conn.model_copy(update={"timeout_s": min(conn.timeout_s, timeout_s)}))
    row = f"plc {name}"
    reads = 0
    try:
        transport.connect()
        for index in indexes:
            cam_plc = config.cameras[index].plc
            if cam_plc is None:
                continue
            for signal, address in parse_map(conn.protocol, cam_plc.map).items():
                try:
                    transport.read_bool(address)
                except PlcRefused as exc:
                    return Check(row, "FAIL", f"cameras[{index}].plc.map.{signal} ({address}): {exc}",
                                 "fix the address, or make the PLC's program expose it (writable by the agent)")
                reads += 1
    except PlcUnreachable as exc:
        where = f"plc.connections.{name}." + ("host/port" if conn.protocol == "modbus" else "endpoint")
        return Check(row, "FAIL", str(exc), f"check {where}, the network and that the PLC's "
                     f"{'Modbus TCP' if conn.protocol == 'modbus' else 'OPC UA'} server is on (the agent starts "
                     "anyway and reconnects by itself)")
    finally:
        transport.close()
    return Check(row, "OK", f"{transport.target}: connected, {reads} mapped address(es) of {len(indexes)} "
                 "camera(s) readable")
