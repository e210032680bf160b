"""The handshake end to end against real PLC servers started here (pymodbus's TCP server, asyncua's Server):
the whole agent (synthetic camera, the shipped model, a real Mosquitto) and a PLC program that triggers parts
and checks, on its side, that every trigger gets exactly one result with the right sequence."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from agent.core.ports import Published
from agent.publish.local_broker import LocalMosquitto
from agent.runtime.service import AgentService
from tests.outputs.plc.agent_setup import MAPS, agent_config
from tests.outputs.plc.plcs import ModbusPlc, OpcUaPlc, Part, PlcProgram, free_port

PROTOCOLS = ("modbus", "opcua")


def start_plc(protocol: str, port: int | None = None) -> ModbusPlc | OpcUaPlc:
    plc = ModbusPlc(MAPS[protocol], port) if protocol == "modbus" else OpcUaPlc(MAPS[protocol], port)
    return plc.start()


class Events:
    """The events the agent published, per camera (a listener on its fan-out)."""

    def __init__(self) -> None:
        self.by_camera: dict[str, list[Published]] = {}
        self._lock = threading.Lock()

    def on_published(self, published: Published) -> None:
        with self._lock:
            self.by_camera.setdefault(published.event.camera, []).append(published)

    def count(self, camera: str) -> int:
        with self._lock:
            return len(self.by_camera.get(camera, []))


@pytest.fixture
def running() -> Iterator[Callable[[AgentService], Events]]:
    services: list[AgentService] = []

    def start(service: AgentService) -> Events:
        events = Events()
        service.start()
        assert service.events is not None
        service.events.add(events)
        services.append(service)
        return events

    yield start
    for service in services:
        service.shutdown(timeout=5.0)


def run_parts(program: PlcProgram, n: int) -> list[Part]:
    parts = []
    for _ in range(n):
        part = program.part()
        assert part is not None, f"trigger {program.triggers + 1}: no result within 10 s"
        parts.append(part)
    return parts


def check_parts(parts: list[Part], events: Events, service: AgentService) -> None:
    """Every trigger got one result: its own sequence, the verdict and event id of one published event."""
    assert [p.sequence for p in parts] == [p.number for p in parts]
    published = {e.event.event_id: e.event for e in events.by_camera["cam1"]}
    assert len(published) == len(parts), "one inspected frame per trigger, no more"
    codes = {"pass": 1, "defect": 2, "uncertain": 3}
    for part in parts:
        event = published[part.event_id]
        assert part.verdict == codes[event.verdict]
        assert part.ok == (event.verdict == "pass") and part.error_code == 0
    stats = service.plc.stats().cameras[0]
    assert stats.triggers == stats.results_written == len(parts)
    assert stats.results_unwritten == stats.results_dropped == 0 and stats.errors == {}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_twenty_parts_each_get_one_result_with_their_sequence(
        protocol: str, mosquitto: LocalMosquitto, running: Callable[[AgentService], Events]) -> None:
    plc = start_plc(protocol)
    try:
        service = AgentService(agent_config(mosquitto.url, protocol, plc.port))
        events = running(service)
        parts = run_parts(PlcProgram(plc), 20)
        check_parts(parts, events, service)
        assert service.stats_document()["plc"]["cam1"]["latency_p50_ms"] > 0
        assert service.health is not None and service.health.server is not None
        with urllib.request.urlopen(service.health.server.url + "/metrics", timeout=5) as reply:
            text = reply.read().decode()
        assert 'edge_agent_plc_results_total{camera="cam1",outcome="written"} 20' in text
        assert 'edge_agent_plc_triggers_total{camera="cam1"} 20' in text
        assert 'edge_agent_plc_connected{connection="line"} 1' in text
    finally:
        plc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_two_hundred_parts(protocol: str, mosquitto: LocalMosquitto,
                           running: Callable[[AgentService], Events]) -> None:
    plc = start_plc(protocol)
    try:
        service = AgentService(agent_config(mosquitto.url, protocol, plc.port))
        events = running(service)
        check_parts(run_parts(PlcProgram(plc), 200), events, service)
    finally:
        plc.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_plc_that_stops_acknowledging_gets_error_2_and_inspection_goes_on(
        protocol: str, mosquitto: LocalMosquitto, running: Callable[[AgentService], Events]) -> None:
    plc = start_plc(protocol)
    try:
        service = AgentService(agent_config(mosquitto.url, protocol, plc.port, free_camera=True, ack_timeout_s=0.3))
        events = running(service)
        program = PlcProgram(plc)
        assert program.part() is not None
        silent = program.part(ack=False)  # the PLC reads the result and never acknowledges
        assert silent is not None and silent.sequence == 2
        assert program.wait("error_code", 2, 3.0) and plc.read("error") is True
        assert program.wait("trigger_ready", True, 3.0) and plc.read("result_ready") is False
        before = events.count("cam2")
        after_error = program.part()  # the station goes on; the next result clears the error
        assert after_error is not None and after_error.sequence == 3 and after_error.error_code == 0
        assert plc.read("error") is False
        deadline = time.monotonic() + 5
        while events.count("cam2") <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events.count("cam2") > before, "the other camera kept being inspected"
        assert service.plc.stats().cameras[0].errors == {"ACK_TIMEOUT": 1}
    finally:
        plc.stop()


def test_a_trigger_while_busy_is_refused_with_error_1(
        mosquitto: LocalMosquitto, running: Callable[[AgentService], Events]) -> None:
    plc = start_plc("modbus")
    try:
        service = AgentService(agent_config(mosquitto.url, "modbus", plc.port, ack_timeout_s=5.0))
        running(service)
        program = PlcProgram(plc)
        first = program.part(ack=False)  # the result waits for its acknowledgement
        assert first is not None and first.sequence == 1
        plc.write("trigger", True)  # a second part arrives too early
        assert program.wait("error_code", 1, 3.0) and program.wait("trigger", False, 3.0)
        assert plc.read("result_ready") is True  # the part in progress goes on
        plc.write("result_ack", True)
        second = program.part()
        assert second is not None and second.sequence == 2 and second.error_code == 0
        stats = service.plc.stats().cameras[0]
        assert stats.errors == {"TRIGGER_WHILE_BUSY": 1} and stats.triggers == 2
    finally:
        plc.stop()


def test_a_plc_lost_mid_handshake_gets_error_5_when_it_is_back(
        mosquitto: LocalMosquitto, running: Callable[[AgentService], Events]) -> None:
    plc = start_plc("modbus")
    port = plc.port
    try:
        service = AgentService(agent_config(mosquitto.url, "modbus", port, ack_timeout_s=30.0))
        running(service)
        first = PlcProgram(plc).part(ack=False)  # the result waits for its acknowledgement ...
        assert first is not None
        plc.stop()  # ... when the PLC goes away
        deadline = time.monotonic() + 5
        while service.plc.stats().connections["line"]["connected"] and time.monotonic() < deadline:
            time.sleep(0.05)
        plc = start_plc("modbus", port)
        program = PlcProgram(plc)
        assert program.wait("error_code", 5, 5.0) and plc.read("error") is True
        assert program.wait("trigger_ready", True, 3.0)  # the handshake starts over
        part = program.part()
        assert part is not None and part.sequence == 2 and part.error_code == 0
        stats = service.plc.stats().cameras[0]
        assert stats.errors == {"PLC_LOST": 1} and stats.results_unwritten == 0  # written, its ack lost
    finally:
        plc.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_plc_away_at_start_and_mid_run_is_reported_not_fatal(
        protocol: str, mosquitto: LocalMosquitto, running: Callable[[AgentService], Events]) -> None:
    port = free_port()
    service = AgentService(agent_config(mosquitto.url, protocol, port, free_camera=True))
    events = running(service)  # no PLC listens yet
    deadline = time.monotonic() + 5
    while (service.plc.stats().connections["line"]["last_error"] is None or events.count("cam2") < 3) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    conn = service.plc.stats().connections["line"]
    assert conn["connected"] is False and "unreachable" in conn["last_error"]
    assert events.count("cam2") >= 3 and events.count("cam1") == 0  # no trigger, no inspection of cam1
    assert service.publisher.stats().connected
    plc = start_plc(protocol, port)  # the PLC comes up: the agent connects by itself
    try:
        program = PlcProgram(plc)
        assert program.part() is not None and program.part() is not None
        plc.stop()  # mid-run
        deadline = time.monotonic() + 5
        while service.plc.stats().connections["line"]["connected"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.plc.stats().connections["line"]["connected"] is False
        assert "lost" in (service.plc.stats().connections["line"]["last_error"] or "") or \
            "unreachable" in (service.plc.stats().connections["line"]["last_error"] or "")
        plc = start_plc(protocol, port)  # back: a fresh PLC memory, the agent reconnects and is ready again
        program = PlcProgram(plc)
        part = program.part()
        assert part is not None and part.sequence == 3  # the agent's count goes on
        assert service.plc.stats().connections["line"]["connects"] == 2
    finally:
        plc.stop()
