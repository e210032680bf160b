"""The stage rule the watchdog and /healthz share, on numbers; and a real Grabber's progress stamps:
busy while a source call hangs, not busy while it waits to reconnect."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from agent.capture.grabber import Grabber
from agent.capture.sources import SourceFrame
from agent.config.models import CameraConfig
from agent.errors import SourceError
from agent.ops.stages import StageProgress, evaluate

NOW = 100.0


@pytest.mark.parametrize(("stage", "stops_watchdog", "problem"), [
    # busy for 1 s of a 5 s window: fine
    (StageProgress("inference", "running", 99.0, 5.0), False, None),
    # waiting for work (not busy) for ever: fine
    (StageProgress("camera a", "running", None, 5.0), False, None),
    # busy 6 s > 5 s window: stuck, names what it was doing
    (StageProgress("camera a", "running", 94.0, 5.0, doing="reading a frame"), True,
     "camera a stuck: busy (reading a frame) for 6.0 s, longer than its 5 s window"),
    # exactly the window: not yet
    (StageProgress("inference", "running", 95.0, 5.0), False, None),
    # finished normally: not checked, however old
    (StageProgress("inference", "idle", 1.0, 5.0), False, None),
    # the thread died: the watchdog stops (a restart may help)
    (StageProgress("outbox forwarder", "dead", None, 5.0, reason="it crashed"), True,
     "outbox forwarder stopped: it crashed"),
    # gave up for good: /healthz says so, the watchdog goes on (a restart would not fix a missing file)
    (StageProgress("camera b", "failed", None, 5.0, reason="file not found"), False, "camera b failed: file not found"),
])
def test_evaluate(stage: StageProgress, stops_watchdog: bool, problem: str | None) -> None:
    report = evaluate([StageProgress("other", "running", None, 1.0), stage], NOW)
    assert report.watchdog_ok is not stops_watchdog
    assert list(report.problems) == ([problem] if problem else [])
    assert report.healthy is (problem is None)


class HangingSource:
    """A live camera whose second read blocks until ``release`` is set."""

    is_live = True

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reads = 0

    def open(self) -> None:
        pass

    def read(self) -> SourceFrame | None:
        self.reads += 1
        if self.reads >= 2:
            self.release.wait(10.0)
        return SourceFrame(np.zeros((8, 8, 3), np.uint8))

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "fake://a"


class UnreachableSource(HangingSource):
    def open(self) -> None:
        raise SourceError("camera source 'fake': connection refused")


def test_a_hanging_read_makes_the_grabber_busy() -> None:
    source = HangingSource()
    grabber = Grabber(CameraConfig(id="a", source="fake://a"), source_factory=lambda _spec: source)
    grabber.start()
    try:
        deadline = time.monotonic() + 5.0
        while source.reads < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert grabber.alive and grabber.busy_since is not None and grabber.busy_doing == "reading a frame"
        assert time.monotonic() - grabber.busy_since >= 0.1
        source.release.set()
        deadline = time.monotonic() + 5.0
        while grabber.busy_since is not None and time.monotonic() < deadline:  # realtime: it reads again at once
            grabber.take(0.01)
            if source.reads > 2:
                break
        assert source.reads > 2
    finally:
        source.release.set()
        assert grabber.stop(2.0)
    assert not grabber.alive and grabber.busy_since is None


def test_a_camera_waiting_to_reconnect_is_not_busy() -> None:
    grabber = Grabber(CameraConfig(id="a", source="fake://a", reconnect_initial_s=5.0),
                      source_factory=lambda _spec: UnreachableSource())
    grabber.start()
    try:
        deadline = time.monotonic() + 5.0
        while grabber.state != "reconnecting" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert grabber.state == "reconnecting" and grabber.alive and grabber.busy_since is None
    finally:
        assert grabber.stop(2.0)
