"""CameraStatusBoard (pure) and StatusRepublisher (its rate-limiting thread)."""

from __future__ import annotations

import datetime
import threading
import time

import pytest

from agent.publish.camera_status import MAX_REASON_CHARS, CameraStatus, CameraStatusBoard, StatusRepublisher
from agent.publish.schema import validate_status

T0 = datetime.datetime(2026, 11, 22, 3, 4, 5, 123456, tzinfo=datetime.timezone.utc)


class StepClock:
    """A UTC clock that moves one second per call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> datetime.datetime:
        self.calls += 1
        return T0 + datetime.timedelta(seconds=self.calls - 1)


def online_status(board: CameraStatusBoard) -> dict[str, object]:
    return {"state": "online", "device": "box1", "since": "2026-11-22T03:04:05Z", "version": "1.0",
            "outbox_pending": 0, "outbox_evicted": 0, **board.status_fields()}


# -- the board ---------------------------------------------------------------------------------------


def test_attached_camera_is_connecting_then_follows_its_grabber() -> None:
    changes: list[int] = []
    board = CameraStatusBoard(now=StepClock(), on_change=lambda: changes.append(1))
    grabber = object()
    board.attach("cam1", grabber)  # T0
    assert board.snapshot() == {"cam1": CameraStatus("connecting", None, T0)}
    assert not board.report(grabber, "cam1", "connecting", None)  # what the grabber says first: no change
    assert board.report(grabber, "cam1", "online", None)  # T0 + 1 s
    assert board.report(grabber, "cam1", "reconnecting", "no frame within 5 s")  # T0 + 2 s
    assert board.status_fields() == {"cameras": {"cam1": {
        "state": "reconnecting", "reason": "no frame within 5 s", "since": "2026-11-22T03:04:07.123456Z"}}}
    assert len(changes) == 3  # attach, online, reconnecting
    assert validate_status(online_status(board)) == []


def test_a_new_reason_for_the_same_state_keeps_since() -> None:
    board = CameraStatusBoard(now=StepClock())
    g = object()
    board.attach("cam1", g)  # T0
    board.report(g, "cam1", "reconnecting", "connection refused")  # T0 + 1 s
    assert board.report(g, "cam1", "reconnecting", "no route to host")  # no clock call
    assert board.snapshot()["cam1"] == CameraStatus("reconnecting", "no route to host",
                                                    T0 + datetime.timedelta(seconds=1))


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        ("reconnecting", "x" * 1000, "x" * (MAX_REASON_CHARS - 1) + "…"),  # cut, so the status stays small
        ("failed", None, "no reason given"),  # a failure always says something
        ("failed", "", "no reason given"),
        ("stopped", "the last error", None),  # stopped right after a failure: no reason
        ("online", "stale text", None),
    ],
)
def test_reasons_only_where_the_state_has_one(state: str, reason: str | None, expected: str | None) -> None:
    board = CameraStatusBoard()
    g = object()
    board.attach("cam1", g)
    board.report(g, "cam1", state, reason)
    assert board.snapshot()["cam1"].reason == expected
    assert validate_status(online_status(board)) == []


def test_reports_from_a_replaced_or_detached_grabber_are_ignored() -> None:
    board = CameraStatusBoard()
    old, new = object(), object()
    board.attach("cam1", old)
    board.attach("cam2", object())
    board.attach("cam1", new)  # a reload restarted cam1: its old grabber stops later
    assert not board.report(old, "cam1", "stopped", None)
    assert board.snapshot()["cam1"].state == "connecting"
    board.detach("cam2")  # a reload removed cam2
    assert not board.report(old, "cam2", "stopped", None)
    assert not board.report(None, "cam3", "online", None)  # never attached
    assert list(board.snapshot()) == ["cam1"]
    board.detach("cam2")  # twice: nothing happens


def test_cameras_keep_the_order_they_were_attached_in() -> None:
    board = CameraStatusBoard()
    for cam in ("b", "a", "c"):
        board.attach(cam, object())
    board.attach("b", object())  # restarted: keeps its place
    assert list(board.status_fields()["cameras"]) == ["b", "a", "c"]


# -- the republisher ---------------------------------------------------------------------------------


class Recorder:
    def __init__(self, fail_first: bool = False) -> None:
        self.times: list[float] = []
        self.fail_first = fail_first
        self.cond = threading.Condition()

    def __call__(self) -> None:
        with self.cond:
            self.times.append(time.monotonic())
            self.cond.notify_all()
        if self.fail_first and len(self.times) == 1:
            raise RuntimeError("boom")

    def wait_for(self, n: int, timeout: float = 5.0) -> list[float]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.times) >= n, timeout), self.times
            return list(self.times)


def test_first_change_goes_out_at_once_and_a_burst_folds_into_one_more() -> None:
    rec = Recorder()
    rep = StatusRepublisher(rec, interval_s=0.4)
    rep.start()
    try:
        t0 = time.monotonic()
        rep.poke()
        first = rec.wait_for(1)[0]
        assert first - t0 < 0.2  # no delay after a quiet period
        for _ in range(50):  # then a camera flaps 50 times within a few milliseconds
            rep.poke()
        second = rec.wait_for(2)[1]
        assert second - first >= 0.4 - 0.01  # the burst waited for the end of the interval
        time.sleep(0.6)
        assert len(rec.times) == 2  # 51 changes, 2 messages
        quiet = time.monotonic()
        rep.poke()
        third = rec.wait_for(3)[2]
        assert third - quiet < 0.2  # quiet again: at once
    finally:
        assert rep.stop()
    assert rep.pokes == 52 and rep.republished == 3


def test_republisher_survives_a_failing_publish_and_stop_drops_a_pending_change(
        caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(fail_first=True)
    rep = StatusRepublisher(rec, interval_s=0.3)
    rep.start()
    rep.poke()
    rec.wait_for(1)
    rep.poke()
    rec.wait_for(2)  # the thread went on after the exception
    rep.poke()  # due in 0.3 s
    assert rep.stop(timeout=1.0)
    time.sleep(0.4)
    assert len(rec.times) == 2
    assert "republishing the device status failed" in caplog.text


def test_republisher_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        StatusRepublisher(lambda: None, interval_s=0)


def test_a_report_never_waits_for_a_slow_publish() -> None:
    """The grabber thread calls report(): it must return at once even while the network is stuck."""
    entered, release = threading.Event(), threading.Event()

    def stuck_publish() -> None:
        entered.set()
        release.wait(5.0)  # e.g. paho blocked on a full socket

    rep = StatusRepublisher(stuck_publish, interval_s=0.05)
    board = CameraStatusBoard(on_change=rep.poke)
    grabber = object()
    rep.start()
    try:
        board.attach("cam1", grabber)
        assert entered.wait(2.0)  # the republisher is now stuck inside publish
        t0 = time.monotonic()
        for i in range(100):
            board.report(grabber, "cam1", "reconnecting" if i % 2 else "online", "refused" if i % 2 else None)
        assert time.monotonic() - t0 < 0.1
    finally:
        release.set()
        assert rep.stop()
    assert rep.republished <= 2  # the stuck one, then at most one more for the 100 changes
