"""The handshake state machine on its own: time in, writes out (no PLC)."""

from __future__ import annotations

from agent.outputs.plc.handshake import ErrorCode, Handshake, Phase, WriteCounter
from agent.outputs.plc.results import PlcResult


def result(verdict: str = "pass", code: int = 0) -> PlcResult:
    return PlcResult("cam1", 7, "e-1", verdict, verdict == "pass", verdict != "pass", code)


def test_one_part_through_the_handshake() -> None:
    m = Handshake(ack_timeout_s=1.0, result_timeout_s=5.0)
    assert m.reset().writes == [("result_ready", False), ("trigger_ready", True)]
    step = m.triggered(10.0)
    assert step.writes == [("trigger", False), ("trigger_ready", False)] and step.arm == 10.0
    done = m.finished(result("defect", 12), 10.05)
    assert done is not None and done.delivered
    writes = dict(done.writes)
    assert writes["sequence"] == 1 and writes["verdict"] == 2 and writes["defect_code"] == 12
    assert writes["result_ng"] is True and writes["ng_count"] == 1 and writes["error_code"] == 0
    names = [name for name, _ in done.writes]
    assert names[-2:] == ["sequence", "result_ready"]  # the sequence after the data, ready last
    assert m.acknowledged().writes == [("result_ack", False), ("result_ready", False), ("trigger_ready", True)]
    assert m.phase == Phase.READY


def test_a_trigger_while_busy_is_refused_with_error_1() -> None:
    m = Handshake(1.0, 5.0)
    m.triggered(0.0)
    step = m.triggered(0.1)
    assert step.error == ErrorCode.TRIGGER_WHILE_BUSY and step.arm is None
    assert step.writes == [("trigger", False), ("error", True), ("error_code", 1)]
    assert m.counts.sequence == 1  # the refused trigger took no number


def test_no_acknowledgement_in_time_is_error_2_and_the_station_is_ready_again() -> None:
    m = Handshake(ack_timeout_s=0.5, result_timeout_s=5.0)
    m.triggered(0.0)
    m.finished(result(), 0.1)
    assert m.tick(0.5) is None  # 0.1 + 0.5 not yet
    step = m.tick(0.61)
    assert step is not None and step.error == ErrorCode.ACK_TIMEOUT
    assert step.writes == [("result_ready", False), ("error", True), ("error_code", 2), ("trigger_ready", True)]
    assert m.phase == Phase.READY
    late_ack = m.acknowledged()
    assert late_ack.writes == [("result_ack", False)]  # a late acknowledgement is cleared, nothing else


def test_no_verdict_in_time_is_error_3_and_a_late_one_is_not_written() -> None:
    m = Handshake(1.0, result_timeout_s=2.0)
    m.triggered(0.0)
    step = m.tick(2.0)
    assert step is not None and step.error == ErrorCode.NO_RESULT and step.disarm
    assert m.finished(result(), 2.5) is None


def test_an_uncertain_verdict_and_the_write_counter() -> None:
    c = WriteCounter()
    first = dict(c.result(result("uncertain")).writes)
    second = dict(c.result(result("pass")).writes)
    assert (first["sequence"], first["verdict"], first["result_ok"]) == (1, 3, False)
    assert (second["sequence"], second["pass_count"], second["ng_count"]) == (2, 1, 1)
