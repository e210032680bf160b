"""The register/node map: addresses parsed against the protocol, overlaps found, and the config errors a line
engineer sees for a bad map (each naming the field)."""

from __future__ import annotations

import pathlib

import pytest

from agent.config.loader import check_config, load_config
from agent.outputs.plc.regmap import Address, find_overlaps, parse_address
from agent.outputs.plc.results import decode_string, encode


@pytest.mark.parametrize(("protocol", "signal", "text", "expected"), [
    ("modbus", "trigger", "coil:0", Address("coil", 0, 1)),  # a bool in a coil
    ("modbus", "trigger", "hr:7", Address("hr", 7, 1)),  # a bool in a register: 0/1
    ("modbus", "verdict", "hr:65535", Address("hr", 65535, 1)),  # the last register
    ("modbus", "sequence", "hr:100", Address("hr", 100, 2)),  # 32 bits: two registers
    ("modbus", "event_id", "hr:200/18", Address("hr", 200, 18)),  # 36 characters in 18 registers
    ("opcua", "verdict", "ns=2;s=Line1.Cam1.Verdict", Address("node", node="ns=2;s=Line1.Cam1.Verdict")),
    ("opcua", "trigger", "ns=3;i=1042", Address("node", node="ns=3;i=1042")),
])
def test_addresses_that_fit(protocol: str, signal: str, text: str, expected: Address) -> None:
    assert parse_address(protocol, signal, text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("protocol", "signal", "text", "message"), [
    ("modbus", "verdict", "coil:3", "a coil holds one bit"),  # a number in a coil
    ("modbus", "sequence", "hr:65535", "runs past the end"),  # 32 bits from the last register
    ("modbus", "event_id", "hr:10/10", "at least 18 registers"),  # too short for an event id
    ("modbus", "event_id", "hr:10", "at least 18 registers"),  # a string without its length
    ("modbus", "verdict", "hr:3/2", "'/R' is for strings"),
    ("modbus", "verdict", "40001", "40001 is hr:0"),  # Modicon numbering: said how to write it
    ("modbus", "verdict", "hr:70000", "runs past the end"),
    ("opcua", "verdict", "Line1.Verdict", "not an OPC UA node id"),
])
def test_addresses_that_do_not_fit_say_why(protocol: str, signal: str, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(protocol, signal, text)  # type: ignore[arg-type]


def test_overlaps_are_found_across_widths_and_tables() -> None:
    entries = [("a", Address("hr", 10, 2)), ("b", Address("hr", 11, 1)), ("c", Address("coil", 11, 1)),
               ("d", Address("node", node="ns=2;s=X")), ("e", Address("node", node="ns=2;s=X"))]
    assert find_overlaps(entries) == ["b (hr:11) overlaps a (hr:10..11)", "e (ns=2;s=X) overlaps d (ns=2;s=X)"]


def test_encoding_numbers_and_strings_into_registers() -> None:
    assert encode("sequence", Address("hr", 0, 2), 0x12345678) == [0x1234, 0x5678]  # high word first
    assert encode("sequence", Address("hr", 0, 2), 2**32 + 5) == [0, 5]  # wraps at 32 bits
    assert encode("result_ok", Address("coil", 0), 1) is True
    assert encode("result_ok", Address("hr", 0), True) == [1]
    words = encode("event_id", Address("hr", 0, 19), "ab-1")
    assert isinstance(words, list) and words[:2] == [0x6162, 0x2D31] and len(words) == 19
    assert decode_string(words) == "ab-1"


def _config(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = """
plc:
  connections:
    line1: {protocol: modbus, host: 127.0.0.1}
    ua: {protocol: opcua, endpoint: "opc.tcp://127.0.0.1:4840/plc"}
cameras:
"""


@pytest.mark.parametrize(("cameras", "message"), [
    # a map that overlaps itself: sequence takes hr:1 and hr:2
    ("- {id: c1, source: synthetic://conveyor, plc: {connection: line1, map: {verdict: 'hr:2', sequence: 'hr:1'}}}",
     "cameras[0].plc.map.sequence (hr:1..2) overlaps cameras[0].plc.map.verdict (hr:2)"),
    # two cameras on one PLC writing the same register
    ("- {id: c1, source: synthetic://conveyor, plc: {connection: line1, map: {verdict: 'hr:0'}}}\n"
     "- {id: c2, source: synthetic://conveyor, plc: {connection: line1, map: {verdict: 'hr:0'}}}",
     "cameras[1].plc.map.verdict (hr:0) overlaps cameras[0].plc.map.verdict (hr:0)"),
    ("- {id: c1, source: synthetic://conveyor, plc: {connection: line9, map: {verdict: 'hr:0'}}}",
     "cameras[0].plc.connection: 'line9' is not a name under plc.connections (line1, ua)"),
    ("- {id: c1, source: synthetic://conveyor, plc: {connection: line1, map: {verdict: 'coil:0'}}}",
     "cameras[0].plc.map.verdict: 'coil:0': a coil holds one bit"),
    ("- {id: c1, source: synthetic://conveyor, plc: {connection: ua, map: {verdict: 'hr:0'}}}",
     "cameras[0].plc.map.verdict: 'hr:0' is not an OPC UA node id"),
    ("- {id: c1, source: synthetic://conveyor, plc: {connection: line1, mode: handshake, map: {verdict: 'hr:0'}}}",
     "mode handshake needs map entries for trigger, trigger_ready, result_ready, result_ack"),
    ("- {id: c1, source: synthetic://conveyor, plc: {connection: line1, map: {verdict: 'hr:0', trigger: 'coil:0'}}}",
     "trigger belong(s) to mode handshake"),
    ("- {id: c1, source: synthetic://conveyor, plc: {connection: line1, map: {verdict: 'hr:0', colour: 'hr:1'}}}",
     "unknown signal(s) colour"),
    # a handshake camera in learn mode would skip most triggered frames
    ("- {id: c1, source: synthetic://conveyor, mode: learn, plc: {connection: line1, mode: handshake, map: "
     "{trigger: 'coil:0', trigger_ready: 'coil:1', result_ready: 'coil:2', result_ack: 'coil:3', verdict: 'hr:0'}}}"
     "\nescalation: {gateway: '127.0.0.1:50051'}",
     "cameras[0].plc.mode: handshake needs the camera to inspect every triggered frame"),
])
def test_bad_maps_are_config_errors_naming_the_field(tmp_path: pathlib.Path, cameras: str, message: str) -> None:
    assert message in "\n".join(check_config(_config(tmp_path, BASE + cameras)))


def test_a_connection_needs_its_address(tmp_path: pathlib.Path) -> None:
    text = "plc: {connections: {p: {protocol: opcua, host: plc1}}}\n"
    problems = "\n".join(check_config(_config(tmp_path, text)))
    assert "plc.connections.p" in problems and "protocol opcua needs endpoint: opc.tcp://HOST:PORT[/PATH]" in problems


def test_a_good_map_loads(tmp_path: pathlib.Path) -> None:
    text = BASE + ("- {id: c1, source: synthetic://conveyor, plc: {connection: line1, mode: handshake, map: "
                   "{trigger: 'coil:0', trigger_ready: 'coil:1', result_ready: 'coil:2', result_ack: 'coil:3', "
                   "verdict: 'hr:0', sequence: 'hr:1', event_id: 'hr:3/18'}}}\n"
                   "- {id: c2, source: synthetic://conveyor, plc: {connection: ua, map: {verdict: 'ns=2;i=5'}}}")
    config = load_config(_config(tmp_path, text))
    assert config.cameras[0].plc is not None and config.cameras[0].plc.mode == "handshake"


def test_a_reload_that_changes_a_cameras_plc_says_it_needs_a_restart(tmp_path: pathlib.Path) -> None:
    from agent.config.reload import plan_reload

    camera = "- {id: c1, source: synthetic://conveyor, plc: {connection: line1, map: {verdict: 'hr:%d'}}}"
    running = load_config(_config(tmp_path, BASE + camera % 0))
    new = load_config(_config(tmp_path, BASE + camera % 4 + "\n- {id: c2, source: synthetic://conveyor, plc: "
                              "{connection: line1, map: {verdict: 'hr:9'}}}"))
    plan = plan_reload(running, new)
    assert plan.needs_restart == ("cameras[c1].plc.map.verdict", "cameras[c2].plc")
    assert plan.restarted == () and plan.added == ("c2",)
