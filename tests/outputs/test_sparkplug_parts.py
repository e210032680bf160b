"""The Sparkplug B output's pure parts, read back with the independent decoder (:mod:`tests.outputs.spb_wire`):
payloads, seq and bdSeq bookkeeping, the host's STATE, and the config's errors for bad ids."""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.config.loader import load_config
from agent.config.models import AgentConfig, CameraConfig
from agent.config.sparkplug import DEVICE_METRICS, SparkplugConfig
from agent.config.taxonomy import load_taxonomy
from agent.core.event import EscalationOutcome, VlmDefect
from agent.core.ports import Published
from agent.errors import ConfigError
from agent.escalation.merge import VlmAnswer, merge
from agent.outputs.sparkplug import payloads
from agent.outputs.sparkplug.metrics import DEVICE_TYPES, CameraTally, defect_codes, record_of
from agent.outputs.sparkplug.node import SparkplugNode
from agent.outputs.sparkplug.session import BdSeqFile, HostTracker, SeqCounter
from agent.publish.outbox import Outbox
from agent.runtime.sparkplug import build_sparkplug
from tests.conftest import make_event
from tests.outputs.spb_wire import BOOLEAN, DATETIME, INT64, STRING, UINT64, decode, rebirth_command


def _config_problems(tmp_path: pathlib.Path, sparkplug: str) -> list[str]:
    path = tmp_path / "agent.yaml"
    path.write_text("device_id: box1\nsparkplug:\n" + sparkplug, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    return err.value.problems


@pytest.mark.parametrize(("section", "expected"), [
    # '/' would split the topic level
    ("  enabled: true\n  group_id: plant/1\n  edge_node_id: n1\n", "sparkplug.group_id 'plant/1' contains '/'"),
    # MQTT wildcards
    ("  enabled: true\n  group_id: p1\n  edge_node_id: 'line#+'\n",
     "sparkplug.edge_node_id 'line#+' contains '#' and '+'"),
    # the edge node id is required once enabled
    ("  enabled: true\n  group_id: p1\n", "sparkplug.edge_node_id is not set"),
    # an empty device id
    ("  enabled: true\n  group_id: p1\n  edge_node_id: n1\n  devices: {cam1: ''}\n",
     "sparkplug.devices.cam1 '' is empty"),
    # a metric name nobody knows
    ("  enabled: true\n  group_id: p1\n  edge_node_id: n1\n  metrics: [Inspection/Colour]\n", "Inspection/Colour"),
])
def test_bad_sparkplug_config_is_named(tmp_path: pathlib.Path, section: str, expected: str) -> None:
    problems = _config_problems(tmp_path, section)
    assert any(expected in p and "sparkplug" in p for p in problems), problems


def test_devices_must_name_cameras_and_stay_distinct() -> None:
    cameras = [CameraConfig(id="belt1", source="synthetic://conveyor"), CameraConfig(id="belt2",
                                                                                    source="synthetic://conveyor")]
    for devices, expected in [({"belt9": "d9"}, "sparkplug.devices.belt9: no camera has the id 'belt9'"),
                              ({"belt1": "belt2"}, "camera 'belt2' would be device 'belt2'")]:
        cfg = AgentConfig(device_id="box1", cameras=cameras, sparkplug=SparkplugConfig(
            enabled=True, group_id="p", edge_node_id="n", devices=devices))
        with pytest.raises(ConfigError) as err:
            build_sparkplug(cfg)
        assert any(expected in p for p in err.value.problems), err.value.problems
    assert build_sparkplug(AgentConfig(device_id="box1", cameras=cameras)) is None  # not enabled: nothing built


def test_seq_runs_0_to_255_then_wraps_and_a_birth_restarts_it() -> None:
    seq = SeqCounter()
    assert seq.birth() == 0
    got = [seq.next() for _ in range(300)]
    assert got[:3] == [1, 2, 3] and got[254] == 255 and got[255] == 0 and got[299] == 44
    assert seq.birth() == 0 and seq.next() == 1


def test_bdseq_increments_per_connection_and_across_restarts(tmp_path: pathlib.Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "sparkplug.bdseq"
    first = BdSeqFile(path)
    assert [first.advance(), first.advance()] == [0, 1]
    assert BdSeqFile(path).advance() == 2  # the next start goes on from the file
    path.write_text("255\n")
    assert BdSeqFile(path).advance() == 0  # wraps
    path.write_text("garbage")
    with caplog.at_level(logging.ERROR):
        assert BdSeqFile(path).advance() == 0
    assert "not a number 0-255" in caplog.text


def test_nbirth_and_ndeath_as_the_specification_reads_them() -> None:
    birth = decode(payloads.node_birth(7, 1_700_000_000_000, {"Properties/Agent Version": "1.2",
                                                              "Properties/Device Id": "box1",
                                                              "Health/Backlog": 3}))
    assert birth.seq == 0 and birth.timestamp == 1_700_000_000_000
    bdseq = birth.metric("bdSeq")
    assert (bdseq.datatype, bdseq.value_field, bdseq.value) == (INT64, 11, 7)
    rebirth = birth.metric("Node Control/Rebirth")
    assert (rebirth.datatype, rebirth.value) == (BOOLEAN, False)
    assert birth.metric("Health/Backlog").value == 3 and birth.metric("Properties/Device Id").value == "box1"
    death = decode(payloads.node_death(7, 1_700_000_000_001))
    assert death.seq is None and [(m.name, m.value) for m in death.metrics] == [("bdSeq", 7)]


def test_ddata_carries_the_event_with_types_capture_time_and_the_historical_flag() -> None:
    tally = CameraTally()
    event = make_event(camera="belt", sequence=42, verdict="defect")
    record = record_of(event, tally, list(DEVICE_METRICS))
    data = decode(payloads.device_data(9, 1_700_000_000_000, record, historical=True))
    assert data.seq == 9
    captured = int(event.captured_at.timestamp() * 1000)
    assert all(m.is_historical and m.timestamp == captured for m in data.metrics)
    values = data.values()
    assert values["Inspection/Verdict"] == "defect" and values["Inspection/Sequence"] == 42
    assert values["Inspection/Event Id"] == event.event_id and values["Inspection/Captured At"] == captured
    assert values["Inspection/Defect Codes"] == "scratch"  # the accepted tag; the uncertain dent is not a code
    assert (values["Counters/Inspected"], values["Counters/Defect"]) == (1, 1)
    types = {m.name: m.datatype for m in data.metrics}
    assert types["Inspection/Verdict"] == STRING and types["Inspection/Sequence"] == UINT64
    assert types["Inspection/Captured At"] == DATETIME and set(types) == set(DEVICE_TYPES)
    live = decode(payloads.device_data(10, 1_700_000_000_000, record, historical=False))
    assert not any(m.is_historical for m in live.metrics)


def test_dbirth_before_any_event_sends_every_metric_as_null() -> None:
    birth = decode(payloads.device_birth(1, 5, ["Inspection/Verdict", "Counters/Pass"], None))
    assert [(m.name, m.is_null, m.value_field) for m in birth.metrics] == [
        ("Inspection/Verdict", True, None), ("Counters/Pass", True, None)]


def test_codes_follow_the_verdict() -> None:
    assert defect_codes(make_event(verdict="pass")) == []
    assert defect_codes(make_event(verdict="uncertain")) == ["dent"]


def test_a_rebirth_command_is_understood_and_garbage_refused() -> None:
    assert payloads.rebirth_requested(rebirth_command(123))
    assert not payloads.rebirth_requested(b"")  # an empty payload: no metric at all
    with pytest.raises(ValueError, match="not a Sparkplug B payload"):
        payloads.rebirth_requested(b"\xff\xff\xff")


def test_state_messages_are_parsed_and_older_ones_ignored() -> None:
    tracker = HostTracker("scada1")
    assert not tracker.online
    assert tracker.update(payloads.parse_state(json.dumps({"online": True, "timestamp": 10}).encode()))
    assert not tracker.update(payloads.HostState(False, 9)) and tracker.online  # older: ignored
    assert tracker.update(payloads.HostState(False, 11)) and not tracker.online
    for bad in (b"ONLINE", b'{"online": "yes", "timestamp": 1}', b'{"online": true}'):
        with pytest.raises(ValueError, match="STATE payload"):
            payloads.parse_state(bad)
    assert HostTracker(None).online  # no primary host configured: never wait


def test_the_independent_decoder_reads_hand_worked_bytes() -> None:
    # Payload{timestamp: 1, metrics: [{name: "bdSeq", datatype: 4, long_value: 5}], seq: 3}, worked by hand:
    # 08 01 (field 1 varint 1) | 12 0b (field 2, 11 bytes: 0a 05 "bdSeq" | 20 04 (field 4 = 4) | 58 05 (field 11 = 5))
    # | 18 03 (field 3 varint 3)
    raw = bytes.fromhex("0801" "120b" "0a05" + b"bdSeq".hex() + "2004" "5805" "1803")
    p = decode(raw)
    assert (p.timestamp, p.seq) == (1, 3)
    assert [(m.name, m.datatype, m.value_field, m.value) for m in p.metrics] == [("bdSeq", 4, 11, 5)]
    # a Double metric (field 13, wire type 1: 8 bytes little endian) and is_historical (field 5 = 1)
    metric = bytes.fromhex("0a01" + b"x".hex() + "200a" "2801" "69" + "000000000000f83f")  # 1.5
    p = decode(bytes.fromhex("12") + bytes([len(metric)]) + metric)
    assert (p.metrics[0].value, p.metrics[0].is_historical) == (1.5, True)
    # and what our generated module writes, read back the same way
    assert decode(payloads.node_death(5, 1)).metric("bdSeq").value == 5


def test_codes_are_the_taxonomy_codes_of_a_defect_the_vlm_answered() -> None:
    example = pathlib.Path(__file__).resolve().parents[2] / "systemd" / "taxonomy.example.yaml"
    event = dataclasses.replace(make_event(verdict="uncertain"), taxonomy=load_taxonomy(example))
    answer = VlmAnswer(verdict="defect", tags=(("Scratch", 0.83),),
                       defects=(VlmDefect("Missing_Piece", "upper left", "high"), VlmDefect("blob", "centre", "low")),
                       description="A scratch.", model="llava:7b", vlm_ms=812.0, gateway_ms=830.5)
    merged = merge(event, EscalationOutcome("answered", model="llava:7b", latency_ms=845.2), answer)
    assert merged.verdict == "defect"
    # the VLM's accepted tag Scratch -> D-101, its defects Missing_Piece -> D-301 and blob (unmapped: the word)
    assert defect_codes(merged) == ["D-101", "D-301", "blob"]


def test_a_store_that_cannot_take_an_event_does_not_stop_inspection(tmp_path: pathlib.Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    # a real outbox too small for any record (as a full disk would refuse it): the listener says so, once
    store = Outbox(tmp_path / "sparkplug.sqlite", max_rows=10, max_bytes=100)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t-spb", protocol=mqtt.MQTTv5)
    node = SparkplugNode(SparkplugConfig(enabled=True, group_id="p", edge_node_id="n"), client, store,
                         BdSeqFile(tmp_path / "sparkplug.bdseq"), lambda c: None, cameras=["cam1"], node_values={})
    try:
        with caplog.at_level(logging.ERROR):
            for i in range(3):
                node.on_published(Published(make_event(sequence=i + 1), 0.001, False))
        assert node.store_failures == 3 and store.stats().rows == 0
        said = [r for r in caplog.records if "not stored" in r.getMessage()]
        assert len(said) == 1 and "larger than outbox.max_bytes" in said[0].getMessage()
    finally:
        store.close()
        client._reset_sockets()  # noqa: SLF001  (never started: close paho's socket pair)
