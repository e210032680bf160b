"""The grabber thread with real files and the synthetic scene.

The only stand-in is :class:`FakeCamera`, a live source whose failures the test
scripts: it plays a camera that drops off the network.
"""

from __future__ import annotations

import datetime
import pathlib
import random
import threading
import time
from typing import Any

import numpy as np
import pytest

from agent.capture.grabber import Grabber
from agent.capture.sources import FrameSource, SourceFrame, open_source
from agent.config.models import CameraConfig
from agent.core.frame import Frame, FrameTruth
from agent.errors import SourceError

from .conftest import DAMAGED_FRAMES, VIDEO_FRAMES, StateRecorder


def camera(source: str, **kwargs: Any) -> CameraConfig:
    return CameraConfig(id="cam1", source=source, **kwargs)


def drain(grabber: Grabber, timeout: float = 10.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while not grabber.ended:
        if time.monotonic() > deadline:
            pytest.fail(f"grabber did not end within {timeout} s: {grabber.stats()}")
        frame = grabber.take(timeout=0.5)
        if frame is not None:
            frames.append(frame)
    return frames


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


class FakeCamera:
    """A live camera that fails the way the test scripts.

    ``open_failures``: how many open() calls fail first. ``frames_per_session``:
    frames delivered after each successful open before read() raises (None: never).
    ``frame_interval``: seconds per read (the camera's frame rate).
    """

    is_live = True

    def __init__(self, open_failures: int = 0, frames_per_session: int | None = None,
                 frame_interval: float = 0.0) -> None:
        self.open_failures = open_failures
        self.frames_per_session = frames_per_session
        self.frame_interval = frame_interval
        self.open_calls: list[float] = []
        self._left: int | None = None
        self._opened = False
        self.closed = 0

    def describe(self) -> str:
        return "fake://camera"

    def open(self) -> None:
        self.open_calls.append(time.monotonic())
        if len(self.open_calls) <= self.open_failures:
            raise SourceError(f"camera source 'fake://camera': connection refused "
                              f"(try {len(self.open_calls)})")
        self._opened = True
        self._left = self.frames_per_session

    def read(self) -> SourceFrame | None:
        if not self._opened:
            raise SourceError("read() before open()")
        if self._left is not None:
            if self._left <= 0:
                self._opened = False
                raise SourceError("camera source 'fake://camera': connection reset")
            self._left -= 1
        if self.frame_interval:
            time.sleep(self.frame_interval)
        return SourceFrame(image=np.zeros((8, 8, 3), np.uint8))

    def close(self) -> None:
        self._opened = False
        self.closed += 1


def factory(source: FrameSource) -> Any:
    return lambda _spec: source


# --------------------------------------------------------------------------- every-frame mode


def test_file_every_frame_in_order(video_file: pathlib.Path, states: StateRecorder,
                                   scene_frames: list[tuple[np.ndarray, FrameTruth]]) -> None:
    grabber = Grabber(camera(str(video_file)), on_state=states)
    assert grabber.realtime is False and grabber.fps_limit is None
    grabber.start()
    frames = drain(grabber)
    assert grabber.stop(2.0)
    assert [f.sequence for f in frames] == list(range(1, VIDEO_FRAMES + 1))
    for frame, (original, _truth) in zip(frames, scene_frames, strict=True):
        assert frame.camera_id == "cam1"
        assert np.abs(frame.image.astype(np.int16) - original).mean() < 6.0
        assert frame.captured_at.tzinfo == datetime.timezone.utc
    assert all(a.monotonic <= b.monotonic for a, b in zip(frames[:-1], frames[1:], strict=True))
    stats = grabber.stats()
    assert (stats.frames_read, stats.delivered, stats.dropped, stats.corrupt) == (
        VIDEO_FRAMES, VIDEO_FRAMES, 0, 0)
    assert stats.state == "ended"
    assert states.states == ["connecting", "online", "ended"]
    assert grabber.take(timeout=0.1) is None  # ended: returns at once


def test_every_frame_mode_applies_back_pressure(video_file: pathlib.Path) -> None:
    grabber = Grabber(camera(str(video_file)))
    grabber.start()
    time.sleep(0.5)  # nobody takes: the grabber must wait, not read ahead or drop
    assert grabber.stats().frames_read <= 3  # two queued plus one waiting for room
    frames = drain(grabber)
    assert len(frames) == VIDEO_FRAMES and grabber.stats().dropped == 0
    assert grabber.stop(2.0)


def test_synthetic_frames_carry_truth() -> None:
    grabber = Grabber(camera("synthetic://conveyor?seed=2&fps=0&frames=5&width=320&height=240"))
    grabber.start()
    frames = drain(grabber)
    assert [f.sequence for f in frames] == [1, 2, 3, 4, 5]
    assert all(isinstance(f.truth, FrameTruth) for f in frames)
    assert grabber.stop(2.0)


def test_corrupt_file_through_the_grabber(corrupt_video: pathlib.Path) -> None:
    grabber = Grabber(camera(str(corrupt_video)))
    grabber.start()
    frames = drain(grabber)
    assert grabber.stop(2.0)
    stats = grabber.stats()
    assert stats.state == "ended"
    assert stats.delivered == len(frames) >= VIDEO_FRAMES // 4
    assert stats.corrupt >= 1
    # every frame of the container has a sequence number, lost ones included; none dropped
    assert stats.frames_read == stats.delivered + stats.corrupt == VIDEO_FRAMES
    assert [f.sequence for f in frames] == sorted({f.sequence for f in frames})


def test_damaged_frames_show_as_sequence_gaps(damaged_video: pathlib.Path) -> None:
    grabber = Grabber(camera(str(damaged_video)))
    grabber.start()
    frames = drain(grabber)
    assert grabber.stop(2.0)
    missing = sorted(set(range(1, VIDEO_FRAMES + 1)) - {f.sequence for f in frames})
    assert missing == [i + 1 for i in DAMAGED_FRAMES]
    assert grabber.stats().corrupt == len(DAMAGED_FRAMES)


# --------------------------------------------------------------------------- realtime mode


def test_realtime_keeps_only_the_newest_frame(video_file: pathlib.Path, states: StateRecorder) -> None:
    grabber = Grabber(camera(str(video_file), realtime=True), on_state=states)
    grabber.start()
    states.wait_for("ended", timeout=10.0)  # a file reads in milliseconds; nobody took anything
    frame = grabber.take(timeout=1.0)
    assert frame is not None and frame.sequence == VIDEO_FRAMES  # the newest
    assert grabber.ended
    stats = grabber.stats()
    assert (stats.frames_read, stats.delivered, stats.dropped) == (VIDEO_FRAMES, 1, VIDEO_FRAMES - 1)
    assert stats.skipped_fps == 0
    assert grabber.stop(2.0)


def test_realtime_slow_consumer_gets_newest_and_drops_are_counted() -> None:
    source = FakeCamera(frame_interval=0.005)  # about 200 fps
    grabber = Grabber(camera("fake://camera"), source_factory=factory(source))
    assert grabber.realtime is True  # live sources default to realtime
    grabber.start()
    taken: list[Frame] = []
    for _ in range(4):
        time.sleep(0.1)  # a slow consumer
        before = grabber.stats().frames_read
        frame = grabber.take(timeout=1.0)
        assert frame is not None
        assert frame.sequence >= before - 1  # the newest (one may be in flight)
        taken.append(frame)
    assert grabber.stop(2.0)
    stats = grabber.stats()
    assert stats.dropped > 10
    assert 0 <= stats.frames_read - stats.delivered - stats.dropped - stats.corrupt <= 1
    gaps = [b.sequence - a.sequence for a, b in zip(taken[:-1], taken[1:], strict=True)]
    assert all(gap > 1 for gap in gaps)  # drops show as sequence gaps


# --------------------------------------------------------------------------- fps limit


def test_fps_paces_a_synthetic_source() -> None:
    grabber = Grabber(camera("synthetic://conveyor?seed=1&fps=0&width=320&height=240", fps=20))
    assert grabber.fps_limit == 20
    grabber.start()
    first = grabber.take(timeout=5.0)
    assert first is not None
    count = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if grabber.take(timeout=max(deadline - time.monotonic(), 0.0)) is not None:
            count += 1
    assert grabber.stop(2.0)
    assert 12 <= count <= 28, f"{count} frames in 1 s at fps=20"
    assert grabber.stats().dropped == 0  # pacing, not dropping


def test_synthetic_fps_query_paces_without_camera_fps() -> None:
    grabber = Grabber(camera("synthetic://conveyor?fps=15"))
    assert grabber.fps_limit == 15.0
    assert Grabber(camera("synthetic://conveyor?fps=0")).fps_limit is None


def test_fps_limit_skips_frames_of_a_live_source() -> None:
    source = FakeCamera(frame_interval=0.005)  # about 200 fps
    grabber = Grabber(camera("fake://camera", fps=10), source_factory=factory(source))
    grabber.start()
    count = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if grabber.take(timeout=max(deadline - time.monotonic(), 0.0)) is not None:
            count += 1
    assert grabber.stop(2.0)
    stats = grabber.stats()
    assert 5 <= count <= 15, f"{count} frames in 1 s at fps=10"
    assert stats.skipped_fps > 20
    assert stats.dropped >= stats.skipped_fps


# --------------------------------------------------------------------------- failures and reconnects


def test_live_source_reconnects_with_growing_delays(states: StateRecorder) -> None:
    source = FakeCamera(open_failures=3, frames_per_session=5)
    grabber = Grabber(
        camera("fake://camera", reconnect_initial_s=0.05, reconnect_max_s=5.0),
        source_factory=factory(source), on_state=states, rng=random.Random(1),
    )
    grabber.start()
    states.wait_for("online", timeout=5.0)
    frame = grabber.take(timeout=2.0)
    assert frame is not None
    # after five frames the stream breaks; the grabber goes back to reconnecting and recovers
    states.wait_for("online", timeout=5.0, occurrence=2)
    assert grabber.stop(2.0)
    assert states.states[:5] == ["connecting", "reconnecting", "online", "reconnecting", "online"]
    assert states.states[-1] == "stopped"
    delays = [b - a for a, b in zip(source.open_calls[:3], source.open_calls[1:4], strict=True)]
    # 0.05, 0.1, 0.2 s, each ±20 %: every one longer than the one before
    assert 0.04 <= delays[0] < delays[1] < delays[2] < 1.0, delays
    assert delays[2] >= 0.16
    # after a good frame the backoff starts again from the initial delay
    assert source.open_calls[4] - source.open_calls[3] < 0.2
    stats = grabber.stats()
    assert stats.reconnects >= 4
    assert stats.last_error is not None and "fake://camera" in stats.last_error


def test_backoff_is_capped() -> None:
    source = FakeCamera(open_failures=1000)
    grabber = Grabber(camera("fake://camera", reconnect_initial_s=0.02, reconnect_max_s=0.05),
                      source_factory=factory(source))
    grabber.start()
    wait_until(lambda: len(source.open_calls) >= 7, 5.0, "seven open attempts")
    assert grabber.stop(2.0)
    delays = [b - a for a, b in zip(source.open_calls[:6], source.open_calls[1:7], strict=True)]
    assert max(delays) < 0.05 * 1.2 + 0.05, delays  # cap plus jitter plus scheduling slack


def test_missing_file_fails_without_retry(tmp_path: pathlib.Path, states: StateRecorder) -> None:
    grabber = Grabber(camera(str(tmp_path / "gone.mp4")), on_state=states)
    grabber.start()
    states.wait_for("failed", timeout=5.0)
    assert grabber.take(timeout=1.0) is None
    assert grabber.ended
    assert grabber.stop(2.0)
    assert states.states == ["connecting", "failed"]
    reason = states.events[-1][2]
    assert reason is not None and "file not found" in reason
    stats = grabber.stats()
    assert stats.reconnects == 0 and stats.state == "failed" and stats.last_error == reason


def test_stop_returns_promptly_while_backing_off(states: StateRecorder) -> None:
    source = FakeCamera(open_failures=1000)
    grabber = Grabber(camera("fake://camera", reconnect_initial_s=30.0, reconnect_max_s=60.0),
                      source_factory=factory(source), on_state=states)
    grabber.start()
    states.wait_for("reconnecting", timeout=5.0)
    started = time.monotonic()
    assert grabber.stop(timeout=2.0)
    assert time.monotonic() - started < 1.0
    assert states.states[-1] == "stopped"
    assert len(source.open_calls) == 1 and grabber.ended


def test_stop_returns_promptly_while_blocked_in_hand_off(video_file: pathlib.Path) -> None:
    grabber = Grabber(camera(str(video_file)))
    grabber.start()
    wait_until(lambda: grabber.stats().frames_read >= 3, 5.0, "the queue to fill")
    started = time.monotonic()
    assert grabber.stop(timeout=2.0)
    assert time.monotonic() - started < 1.0
    assert grabber.stats().state == "stopped"


def test_stop_returns_promptly_while_pacing() -> None:
    grabber = Grabber(camera("synthetic://conveyor?fps=0&width=320&height=240", fps=0.2))
    grabber.start()
    assert grabber.take(timeout=5.0) is not None  # the next one is due in 5 s
    time.sleep(0.2)
    started = time.monotonic()
    assert grabber.stop(timeout=2.0)
    assert time.monotonic() - started < 1.0


def test_a_failing_state_listener_does_not_stop_the_camera(video_file: pathlib.Path) -> None:
    def broken_listener(camera_id: str, state: str, reason: str | None) -> None:
        raise RuntimeError("listener bug")

    grabber = Grabber(camera(str(video_file)), on_state=broken_listener)
    grabber.start()
    assert len(drain(grabber)) == VIDEO_FRAMES
    assert grabber.stop(2.0)


def test_bad_spec_fails_at_construction() -> None:
    with pytest.raises(SourceError, match="unknown query key 'sed'"):
        Grabber(camera("synthetic://conveyor?sed=1"))


def test_thread_is_named_after_the_camera() -> None:
    grabber = Grabber(camera("synthetic://conveyor?fps=1&width=320&height=240"))  # paced: stays alive
    grabber.start()
    assert any(t.name == "grab-cam1" and t.daemon for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="already started"):
        grabber.start()
    assert grabber.stop(2.0)
    assert not any(t.name == "grab-cam1" for t in threading.enumerate())


def test_the_default_source_is_the_one_the_camera_config_asks_for() -> None:
    # camera.decoder picks (agent.capture.decoders; tests/capture/test_pyav_source.py has every case)
    cam = CameraConfig(id="cam1", source="rtsp://user:pw@127.0.0.1:9/cam", decoder="opencv")
    grabber = Grabber(cam)
    assert grabber.realtime is True and grabber.source.describe() == "rtsp://***:***@127.0.0.1:9/cam"
    assert isinstance(grabber.source, type(open_source("rtsp://127.0.0.1:9/cam")))
