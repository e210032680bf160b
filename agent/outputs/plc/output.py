"""The PLC outputs of one agent, built from the config: one :class:`PlcLink` per connection that a camera
uses, a :class:`TriggerGate` in front of each handshake camera's frames, and one event listener that hands
every published event of a PLC camera to its channel. Its counters are :class:`PlcStats`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from agent.config.plc import CameraPlcConfig, PlcConfig, PlcConnectionConfig
from agent.core.ports import FrameQueue, Published
from agent.outputs.plc.gate import TriggerGate
from agent.outputs.plc.link import Channel, PlcLink
from agent.outputs.plc.regmap import parse_map
from agent.outputs.plc.transport import PlcTransport

__all__ = ["PlcCameraStats", "PlcOutputs", "PlcStats", "open_transport"]

TransportFactory = Callable[[PlcConnectionConfig], PlcTransport]


def open_transport(cfg: PlcConnectionConfig) -> PlcTransport:
    """The transport of ``cfg.protocol`` (no I/O yet: the link connects)."""
    if cfg.protocol == "modbus":
        from agent.outputs.plc.modbus import ModbusTransport  # noqa: PLC0415  pymodbus only where used
        return ModbusTransport(cfg.host or "", cfg.port, cfg.unit_id, cfg.timeout_s)
    from agent.outputs.plc.opcua import OpcUaTransport  # noqa: PLC0415  asyncua only where used
    return OpcUaTransport(cfg.endpoint or "", cfg.timeout_s)


@dataclasses.dataclass(frozen=True)
class PlcCameraStats:
    camera: str
    connection: str
    mode: str
    connected: bool
    triggers: int
    results_written: int
    results_unwritten: int
    results_dropped: int
    late_results: int
    errors: dict[str, int]
    latency_p50_ms: float | None
    latency_p99_ms: float | None


@dataclasses.dataclass(frozen=True)
class PlcStats:
    cameras: tuple[PlcCameraStats, ...]
    connections: dict[str, dict[str, Any]]  # name -> target, connected, connects, last_error


class PlcOutputs:
    def __init__(self, plc: PlcConfig, cameras: Sequence[tuple[str, CameraPlcConfig | None]],
                 transports: TransportFactory = open_transport) -> None:
        self._channels: dict[str, Channel] = {}
        self.links: list[PlcLink] = []
        by_connection: dict[str, list[Channel]] = {}
        for camera, cfg in cameras:
            if cfg is None:
                continue
            conn = plc.connections[cfg.connection]  # checked by the config
            channel = Channel(camera, cfg, parse_map(conn.protocol, cfg.map), plc.queue, None)
            self._channels[camera] = channel
            by_connection.setdefault(cfg.connection, []).append(channel)
        for name, channels in by_connection.items():
            conn = plc.connections[name]
            self.links.append(PlcLink(name, conn, transports(conn), channels))
        self._link_of = {ch.camera: link for link in self.links for ch in link.channels}

    @property
    def active(self) -> bool:
        return bool(self.links)

    def gate(self, camera: str, queue: FrameQueue) -> FrameQueue:
        """``queue`` as the inference loop should take it: behind a trigger gate for a handshake camera."""
        channel = self._channels.get(camera)
        if channel is None or channel.handshake is None:
            return queue
        if channel.gate is None or channel.gate.inner is not queue:
            channel.gate = TriggerGate(queue)
        return channel.gate

    def on_published(self, published: Published) -> None:
        """The event fan-out's listener: a PLC camera's result goes to its link's thread."""
        channel = self._channels.get(published.event.camera)
        if channel is not None and channel.offer(published.event):
            self._link_of[channel.camera].wake()

    def start(self, on_change: Callable[[], None] | None = None) -> None:
        """Connect in the background; ``on_change`` is told when a connection comes or goes (the status)."""
        for link in self.links:
            link.on_change = on_change
            link.start()

    def stop(self, timeout: float = 2.0) -> None:
        for link in self.links:
            link.stop(timeout)

    def stats(self) -> PlcStats:
        cameras = []
        for link in self.links:
            for ch in link.channels:
                s = ch.stats
                lat = sorted(s.latencies_ms)
                cameras.append(PlcCameraStats(
                    ch.camera, link.name, ch.cfg.mode, link.connected, s.triggers, s.results_written,
                    s.results_unwritten, s.results_dropped, s.late_results, dict(s.errors),
                    _pick(lat, 0.5), _pick(lat, 0.99)))
        connections = {link.name: {"target": link.transport.target, "connected": link.connected,
                                   "connects": link.connects, "last_error": link.report.last_error}
                       for link in self.links}
        return PlcStats(tuple(cameras), connections)

    def status_fields(self) -> dict[str, Any]:
        """The retained status's ``plc``: each connection's state (nothing without PLC outputs)."""
        if not self.links:
            return {}
        return {"plc": self.stats().connections}

    def stats_document(self) -> dict[str, Any] | None:
        """The periodic stats' ``plc``: per camera its counters and latencies."""
        if not self.links:
            return None
        return {s.camera: dataclasses.asdict(s) for s in self.stats().cameras}


def _pick(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 3)
