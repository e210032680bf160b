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
