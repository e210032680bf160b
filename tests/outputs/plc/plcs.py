"""Real PLC servers for the tests and the bench, each on a free port in a thread of its own: pymodbus's TCP
server (its simulator datastore) and asyncua's own Server. :class:`PlcProgram` is the PLC's side of the
handshake (what a ladder program would do), reading and writing the PLC's memory through :class:`PlcMemory`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from asyncua import Server, ua
from pymodbus.client import ModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from agent.outputs.plc.regmap import SIGNALS, Address, parse_address
from agent.outputs.plc.results import decode_string

Value = bool | int | str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PlcMemory(Protocol):
    def read(self, signal: str) -> Value: ...

    def write(self, signal: str, value: Value) -> None: ...


class _LoopThread:
    """An asyncio loop in a daemon thread, running ``serve()`` until stopped."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, serve: Any) -> None:
        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(serve(self._ready))
            except BaseException as exc:  # reported by start()
                self._error = exc
                self._ready.set()
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the PLC server did not start: {self._error!r}")

    def call(self, coro: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(10)
        self.loop.close()


class ModbusPlc:
    """pymodbus's TCP server as the PLC: coils 0..999 and holding registers 0..999 of unit 1. The PLC side
    reads and writes them through a client of its own."""

    def __init__(self, mapping: Mapping[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.addresses = {s: parse_address("modbus", s, t) for s, t in mapping.items()}
        self._lt: _LoopThread | None = None
        self._server: ModbusTcpServer | None = None
        self._client: ModbusTcpClient | None = None
        self._lock = threading.Lock()

    def start(self) -> ModbusPlc:
        device = SimDevice(id=1, simdata=(
            [SimData(0, count=1000, datatype=DataType.BITS)], [SimData(0, count=8, datatype=DataType.BITS)],
            [SimData(0, count=1000, datatype=DataType.REGISTERS)], [SimData(0, count=8, datatype=DataType.REGISTERS)]))

        async def serve(ready: threading.Event) -> None:
            self._server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
            await self._server.serve_forever(background=True)
            ready.set()
            await self._server.serving

        self._lt = _LoopThread()
        self._lt.start(serve)
        self._client = ModbusTcpClient("127.0.0.1", port=self.port, timeout=2, retries=1)
        assert self._client.connect()
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._lt is not None and self._server is not None:
            self._lt.call(self._server.shutdown())  # type: ignore[no-untyped-call]
            self._lt.join()
        self._lt = self._server = self._client = None

    def read(self, signal: str) -> Value:
        a, kind = self.addresses[signal], SIGNALS[signal].kind
        with self._lock:
            assert self._client is not None
            if a.table == "coil":
                return bool(self._client.read_coils(a.start, count=1, device_id=1).bits[0])
            regs = self._client.read_holding_registers(a.start, count=a.width, device_id=1).registers
        if kind == "string":
            return decode_string(regs)
        if kind == "bool":
            return bool(regs[0])
        return (regs[0] << 16) | regs[1] if kind == "u32" else regs[0]

    def write(self, signal: str, value: Value) -> None:
        a = self.addresses[signal]
        with self._lock:
            assert self._client is not None
            if a.table == "coil":
                reply = self._client.write_coil(a.start, bool(value), device_id=1)
            else:
                reply = self._client.write_register(a.start, int(value), device_id=1)
        assert not reply.isError()


_UA_TYPES = {"bool": (ua.VariantType.Boolean, False), "u16": (ua.VariantType.Int32, 0),
             "u32": (ua.VariantType.UInt32, 0), "string": (ua.VariantType.String, "")}


class OpcUaPlc:
    """asyncua's own Server as the PLC, with one variable per mapped signal (numbers as Int32 (a DINT) or
    UInt32, to check the agent writes each node with its own type). The PLC side writes through the server."""

    def __init__(self, mapping: Mapping[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/plc"
        self.mapping = dict(mapping)
        self._lt: _LoopThread | None = None
        self._stop: asyncio.Event | None = None
        self._nodes: dict[str, Any] = {}

    def start(self) -> OpcUaPlc:
        async def serve(ready: threading.Event) -> None:
            self._stop = asyncio.Event()
            server = Server()
            await server.init()
            server.set_endpoint(self.endpoint)
            await server.register_namespace("urn:test:plc")
            for signal, node_id in self.mapping.items():
                vtype, initial = _UA_TYPES[SIGNALS[signal].kind]
                nid = ua.NodeId.from_string(node_id)
                node = await server.nodes.objects.add_variable(nid, signal, ua.Variant(initial, vtype))
                await node.set_writable()
                self._nodes[signal] = node
            async with server:
                ready.set()
                await self._stop.wait()

        self._lt = _LoopThread()
        self._lt.start(serve)
        return self

    def stop(self) -> None:
        if self._lt is not None and self._stop is not None:
            self._lt.loop.call_soon_threadsafe(self._stop.set)
            self._lt.join()
        self._lt = None

    def read(self, signal: str) -> Value:
        assert self._lt is not None
        return self._lt.call(self._nodes[signal].read_value())  # type: ignore[no-any-return]

    def write(self, signal: str, value: Value) -> None:
        assert self._lt is not None
        vtype, _ = _UA_TYPES[SIGNALS[signal].kind]
        self._lt.call(self._nodes[signal].write_value(ua.DataValue(ua.Variant(value, vtype))))


@dataclasses.dataclass
class Part:
    number: int  # the PLC's own count of triggers
    sequence: int  # what the agent wrote
    verdict: int
    ok: bool
    ng: bool
    event_id: str
    latency_s: float  # trigger raised -> result_ready seen, from the PLC side
    error_code: int


class PlcProgram:
    """The PLC's side of the handshake: wait for trigger_ready, raise trigger, wait for result_ready, read the
    result, raise result_ack, wait for result_ready to drop."""

    def __init__(self, memory: PlcMemory, poll_s: float = 0.002) -> None:
        self.memory = memory
        self.poll_s = poll_s
        self.triggers = 0

    def wait(self, signal: str, value: Value, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.memory.read(signal) == value:
                return True
            time.sleep(self.poll_s)
        return False

    def part(self, *, ack: bool = True, timeout: float = 10.0) -> Part | None:
        """One part through the station; None when no result came within ``timeout``."""
        if not self.wait("trigger_ready", True, timeout):
            return None
        self.triggers += 1
        t0 = time.monotonic()
        self.memory.write("trigger", True)
        if not self.wait("result_ready", True, timeout):
            return None
        latency = time.monotonic() - t0
        m = self.memory
        got = Part(self.triggers, int(m.read("sequence")), int(m.read("verdict")), bool(m.read("result_ok")),
                   bool(m.read("result_ng")), str(m.read("event_id")), latency, int(m.read("error_code")))
        if ack:
            m.write("result_ack", True)
            self.wait("result_ready", False, timeout)
        return got


def address(protocol: str, signal: str, text: str) -> Address:
    return parse_address("modbus" if protocol == "modbus" else "opcua", signal, text)
