"""The ``plc:`` section (named connections to the line's PLCs) and a camera's ``plc:`` (which connection, write
or handshake, what goes where). The addresses are checked here against the protocol (:mod:`agent.outputs.plc.
regmap`): a map that overlaps itself or another camera's on the same PLC, a number in a coil, a string too short,
an unknown connection name: each a config error naming the field. See docs/plc.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Annotated, Literal, Protocol, TypeVar

from pydantic import Field, field_validator, model_validator

from agent.config.base import Strict
from agent.outputs.plc.regmap import SIGNALS, Address, find_overlaps, parse_address, required_signals

__all__ = ["CameraPlcConfig", "PlcConfig", "PlcConnectionConfig", "check_camera_plcs"]


class PlcConnectionConfig(Strict):
    """One PLC the agent writes to, as a client."""

    protocol: Literal["modbus", "opcua"]
    host: str | None = Field(default=None, description="modbus: the PLC's host name or address")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(default=502, description="modbus: TCP port")
    unit_id: Annotated[int, Field(ge=0, le=255)] = Field(default=1, description="modbus: unit (device) id")
    endpoint: str | None = Field(default=None, description="opcua: the PLC server's endpoint, opc.tcp://HOST:PORT/PATH")
    timeout_s: Annotated[float, Field(gt=0, le=30)] = Field(
        default=1.0, description="one request's timeout; a PLC that does not answer within it is unreachable")
    poll_interval_s: Annotated[float, Field(ge=0.001, le=1)] = Field(
        default=0.005, description="how often the trigger and acknowledgement signals are read (handshake)")
    reconnect_initial_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    @model_validator(mode="after")
    def _address(self) -> PlcConnectionConfig:
        if self.protocol == "modbus" and not self.host:
            raise ValueError("protocol modbus needs host (the PLC's address; port defaults to 502)")
        if self.protocol == "opcua" and not (self.endpoint and self.endpoint.startswith("opc.tcp://")):
            raise ValueError("protocol opcua needs endpoint: opc.tcp://HOST:PORT[/PATH]")
        return self


class PlcConfig(Strict):
    connections: dict[str, PlcConnectionConfig] = Field(
        default_factory=dict, description="named PLC connections; cameras[].plc.connection names one")
    queue: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=64, description="results waiting to be written per camera; when full the oldest is dropped, "
        "counted and logged")

    @field_validator("connections")
    @classmethod
    def _names(cls, v: dict[str, PlcConnectionConfig]) -> dict[str, PlcConnectionConfig]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
                raise ValueError(f"connection name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
        return v


class CameraPlcConfig(Strict):
    """What one camera writes to a PLC, and where."""

    connection: str = Field(description="a name under plc.connections")
    mode: Literal["write", "handshake"] = Field(default="write", description=(
        "write: every event's result is written; handshake: the camera is inspected only on the PLC's trigger"))
    map: dict[str, str] = Field(description="signal -> address (Modbus 'coil:N', 'hr:N', 'hr:N/R'; OPC UA node id)")
    ack_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=2.0, description="handshake: how long result_ready waits for result_ack before error 2")
    result_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0, description="handshake: how long a trigger waits for its frame's final verdict before "
        "error 3 (cover the VLM's deadline)")
    uncertain_is_ng: bool = Field(default=True, description=(
        "an uncertain verdict (the VLM gave none) raises result_ng; false: neither ok nor ng"))
    defect_codes: dict[str, Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=dict, description="defect label (canonical or raw) -> code written to defect_code")
    unknown_defect_code: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=999, description="defect_code for a defect whose label is not in defect_codes")

    @field_validator("map")
    @classmethod
    def _signals(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = [s for s in v if s not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown signal(s) {', '.join(unknown)}; expected some of {', '.join(SIGNALS)}")
        return v

    @model_validator(mode="after")
    def _complete(self) -> CameraPlcConfig:
        missing = [s for s in required_signals(self.mode) if s not in self.map]
        if missing:
            raise ValueError(f"mode {self.mode} needs map entries for {', '.join(missing)}")
        if self.mode == "write":
            stray = [s for s in self.map if SIGNALS[s].handshake_only]
            if stray:
                raise ValueError(f"map: {', '.join(stray)} belong(s) to mode handshake; this camera's mode is write")
        if not any(s in self.map for s in ("result_ok", "result_ng", "verdict")):
            raise ValueError("map needs at least one of result_ok, result_ng, verdict: the result itself")
        return self


class _Camera(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def plc(self) -> CameraPlcConfig | None: ...


_C = TypeVar("_C", bound=_Camera)


def check_camera_plcs(plc: PlcConfig, cameras: Sequence[_C], learns: Callable[[_C], bool] | None = None) -> list[str]:
    """Problems with the cameras' ``plc`` against ``plc.connections``: unknown names, addresses the protocol
    cannot hold, maps that overlap themselves or each other on one PLC, a handshake camera in learn mode
    (``learns``: whether a camera is). One line each, naming the field."""
    problems: list[str] = []
    on_plc: dict[str, list[tuple[str, Address]]] = {}
    for index, cam in enumerate(cameras):
        cfg = cam.plc
        if cfg is None:
            continue
        where = f"cameras[{index}].plc"
        if cfg.mode == "handshake" and learns is not None and learns(cam):
            problems.append(f"{where}.mode: handshake needs the camera to inspect every triggered frame, and camera "
                            f"{cam.id} is in learn mode (most of its frames are skipped, so triggers would time "
                            "out); set its mode: inspect, or use plc mode write")
        conn = plc.connections.get(cfg.connection)
        if conn is None:
            known = ", ".join(plc.connections) or "none are configured"
            problems.append(f"{where}.connection: {cfg.connection!r} is not a name under plc.connections ({known})")
            continue
        for signal, text in cfg.map.items():
            try:
                address = parse_address(conn.protocol, signal, text)
            except ValueError as exc:
                problems.append(f"{where}.map.{signal}: {exc}")
                continue
            on_plc.setdefault(cfg.connection, []).append((f"{where}.map.{signal}", address))
    for name, entries in on_plc.items():
        problems += [f"plc.connections.{name}: {p}" for p in find_overlaps(entries)]
    return problems
