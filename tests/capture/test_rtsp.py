"""The grabber against a real RTSP camera (GStreamer's RTSP server), including an outage."""

from __future__ import annotations

import pytest

from agent.capture.grabber import Grabber
from agent.capture.sources import FrameSource, OpenCVSource
from agent.config.models import CameraConfig

from .conftest import RtspServer, StateRecorder


def _source(spec: str) -> FrameSource:
    # a short read timeout so that a dead server is noticed quickly
    return OpenCVSource(spec, open_timeout_s=5.0, read_timeout_s=2.0)


@pytest.mark.timeout(90)
def test_rtsp_camera_outage_and_recovery(rtsp_server: RtspServer, states: StateRecorder) -> None:
    cam = CameraConfig(id="rtsp1", source=rtsp_server.url, reconnect_initial_s=0.2, reconnect_max_s=1.0)
    grabber = Grabber(cam, source_factory=_source, on_state=states)
    assert grabber.realtime and grabber.source.is_live
    grabber.start()
    try:
        states.wait_for("online", timeout=20.0)
        frame = grabber.take(timeout=5.0)
        assert frame is not None
        assert frame.image.shape == (rtsp_server.height, rtsp_server.width, 3)
        first_sequence = frame.sequence

        rtsp_server.kill()  # the camera loses power
        states.wait_for("reconnecting", timeout=15.0)
        while grabber.take(timeout=0.2) is not None:  # frames decoded before the outage
            pass

        rtsp_server.start()  # back on the same port
        states.wait_for("online", timeout=20.0, occurrence=2)
        frame = grabber.take(timeout=5.0)
        assert frame is not None and frame.sequence > first_sequence
    finally:
        assert grabber.stop(timeout=5.0)
    stats = grabber.stats()
    assert states.states[:4] == ["connecting", "online", "reconnecting", "online"]
    assert states.states[-1] == "stopped"
    assert stats.reconnects >= 1 and stats.last_error is not None
    assert stats.frames_read >= 2


class _CountingCapture:
    """A real cv2.VideoCapture that counts what the source asks of it."""

    def __init__(self, cap: object) -> None:
        self.cap = cap
        self.calls = {"grab": 0, "retrieve": 0, "read": 0}

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.cap, name)
        if name not in self.calls:
            return attr

        def counted(*args: object) -> object:
            self.calls[name] += 1
            return attr(*args)

        return counted


@pytest.mark.timeout(90)
def test_frames_the_fps_limit_drops_are_not_converted(rtsp_server: RtspServer, states: StateRecorder) -> None:
    captures: list[_CountingCapture] = []

    class Counting(OpenCVSource):
        def _open_capture(self):  # type: ignore[no-untyped-def]
            captures.append(_CountingCapture(super()._open_capture()))
            return captures[-1]

    cam = CameraConfig(id="rtsp5", source=rtsp_server.url, fps=5)  # the stream sends 15 frames a second
    grabber = Grabber(cam, source_factory=lambda spec: Counting(spec, open_timeout_s=5.0, read_timeout_s=2.0),
                      on_state=states)
    grabber.start()
    try:
        states.wait_for("online", timeout=20.0)
        taken = []
        while len(taken) < 8:
            frame = grabber.take(timeout=5.0)
            assert frame is not None
            taken.append(frame)
    finally:
        assert grabber.stop(timeout=5.0)
    calls = captures[-1].calls
    stats = grabber.stats()
    assert all(f.image.shape == (rtsp_server.height, rtsp_server.width, 3) for f in taken)
    assert calls["read"] == 0 and calls["grab"] >= 20  # every frame read from the stream ...
    assert calls["retrieve"] <= calls["grab"] // 2  # ... about one in three converted
    assert stats.skipped_fps >= calls["grab"] - calls["retrieve"] - 1
