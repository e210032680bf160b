"""Frame sources against real files and sockets; no OpenCV mocks."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from agent.capture.sources import (
    OpenCVSource,
    SourceFrame,
    SyntheticSource,
    open_source,
)
from agent.capture.synthetic import ConveyorScene, SceneSettings
from agent.core.frame import FrameTruth
from agent.errors import SourceError

from .conftest import DAMAGED_FRAMES, VIDEO_FRAMES

# --------------------------------------------------------------------------- synthetic


def test_synthetic_parses_query_and_yields_truth() -> None:
    source = open_source("synthetic://conveyor?seed=1&fps=12.5&frames=3&width=320&height=240")
    assert isinstance(source, SyntheticSource)
    assert (source.seed, source.fps, source.frames, source.nominal_fps) == (1, 12.5, 3, 12.5)
    assert source.is_live is False
    expected = ConveyorScene(seed=1, settings=SceneSettings(width=320, height=240))
    source.open()
    for _ in range(3):
        frame = source.read()
        assert frame is not None and frame.image is not None and not frame.corrupt
        assert frame.image.shape == (240, 320, 3) and frame.image.dtype == np.uint8
        assert isinstance(frame.truth, FrameTruth)
        image, truth = expected.next_frame()
        assert np.array_equal(frame.image, image)  # deterministic for the seed
        assert frame.truth == truth
    assert source.read() is None  # frames=3 reached
    source.open()  # re-opening restarts the same stream
    again = source.read()
    assert again is not None and again.truth == ConveyorScene(
        seed=1, settings=SceneSettings(width=320, height=240)).next_frame()[1]
    source.close()


def test_synthetic_defaults() -> None:
    source = SyntheticSource("synthetic://conveyor")
    assert (source.seed, source.fps, source.frames, source.nominal_fps) == (0, 15.0, None, 15.0)
    assert (source.width, source.height) == (640, 480)
    assert SyntheticSource("synthetic://conveyor?fps=0").nominal_fps is None  # 0 = unpaced


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        # an unknown key is named, with the accepted keys
        ("synthetic://conveyor?speed=3", ["'speed'", "seed, fps, frames, width, height, edge_marks"]),
        # not an integer
        ("synthetic://conveyor?seed=abc", ["'seed'", "integer", "'abc'"]),
        # negative rate
        ("synthetic://conveyor?fps=-1", ["'fps'", "between 0 and 240"]),
        # not a number at all
        ("synthetic://conveyor?fps=fast", ["'fps'", "number"]),
        # zero frames makes no stream
        ("synthetic://conveyor?frames=0", ["'frames'", "between 1"]),
        # a key twice is ambiguous
        ("synthetic://conveyor?seed=1&seed=2", ["'seed'", "twice"]),
        # too small for the scene
        ("synthetic://conveyor?height=100", ["'height'", "between 240"]),
        # only one scene exists
        ("synthetic://belt", ["unknown synthetic scene 'belt'", "conveyor"]),
    ],
)
def test_synthetic_bad_query(spec: str, fragments: list[str]) -> None:
    with pytest.raises(SourceError) as info:
        open_source(spec)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_read_before_open_is_an_error(video_file: pathlib.Path) -> None:
    for source in (SyntheticSource("synthetic://conveyor"), OpenCVSource(str(video_file))):
        with pytest.raises(SourceError, match="before open"):
            source.read()


def test_source_frame_without_image_must_be_corrupt() -> None:
    with pytest.raises(ValueError, match="corrupt"):
        SourceFrame(image=None)
    assert SourceFrame.broken().corrupt


# --------------------------------------------------------------------------- spec dispatch


@pytest.mark.parametrize(
    ("spec", "kind", "live"),
    [
        ("rtsp://10.0.0.5:554/stream1", "stream", True),  # IP camera
        ("rtsps://cam.local/stream", "stream", True),  # RTSP over TLS
        ("http://10.0.0.6/video.mjpg", "stream", True),  # MJPEG over HTTP
        ("HTTPS://cam.local/live", "stream", True),  # scheme is case-insensitive
        ("/dev/video0", "v4l2", True),  # USB camera by device node
        ("2", "v4l2", True),  # USB camera by index
        ("clips/line3.mp4", "file", False),  # a relative file path
        ("file:///data/clip%201.mp4", "file", False),  # a file URL, percent-decoded
    ],
)
def test_open_source_picks_the_implementation(spec: str, kind: str, live: bool) -> None:
    source = open_source(spec)
    assert isinstance(source, OpenCVSource)
    assert (source.kind, source.is_live) == (kind, live)


@pytest.mark.parametrize("spec", ["ftp://host/clip.mp4", "mqtt://broker/cam", "rtmpx://x/y"])
def test_unknown_scheme_lists_accepted_forms(spec: str) -> None:
    with pytest.raises(SourceError) as info:
        open_source(spec)
    message = str(info.value)
    assert "unknown URL scheme" in message
    for form in ("synthetic://conveyor", "rtsp://", "http(s)://", "/dev/videoN", "gst:", "video file"):
        assert form in message


def test_empty_spec_is_an_error() -> None:
    with pytest.raises(SourceError, match="empty"):
        open_source("  ")


@pytest.mark.skipif(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER), reason="OpenCV has GStreamer here")
def test_gstreamer_pipeline_without_gstreamer_support_says_so() -> None:
    with pytest.raises(SourceError, match="without GStreamer support"):
        open_source("gst:videotestsrc ! videoconvert ! appsink")


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("spec", "masked"),
    [
        # the classic IP camera URL
        ("rtsp://admin:s3cret@10.0.0.5:554/Streaming/Channels/101",
         "rtsp://***:***@10.0.0.5:554/Streaming/Channels/101"),
        # an unescaped '@' in the password: everything up to the last '@' is user info
        ("rtsp://admin:p@ss@cam.local/live", "rtsp://***:***@cam.local/live"),
        # a bare token as user info
        ("https://tok3n@cam.local/video", "https://***@cam.local/video"),
        # password in the query (Dahua/Hikvision HTTP style); other keys stay
        ("http://cam.local/video.cgi?user=admin&password=s3cret&channel=1",
         "http://cam.local/video.cgi?user=***&password=***&channel=1"),
        # credentials as path parameters (Dahua-style), no '?' at all
        ("rtsp://cam.local/user=admin&password=s3cret&channel=1",
         "rtsp://cam.local/user=***&password=***&channel=1"),
        # Foscam-style CGI login
        ("http://cam.local/videostream.cgi?loginuse=admin&loginpas=s3cret",
         "http://cam.local/videostream.cgi?loginuse=***&loginpas=***"),
        # nothing to hide
        ("rtsp://cam.local/live", "rtsp://cam.local/live"),
        ("clips/a.mp4", "clips/a.mp4"),
    ],
)
def test_a_source_describes_itself_without_credentials(spec: str, masked: str) -> None:
    assert open_source(spec).describe() == masked


def test_a_gstreamer_source_error_hides_the_credentials_of_its_rtsp_url() -> None:
    # without GStreamer in this OpenCV the constructor refuses the pipeline; its message shows the spec
    with pytest.raises(SourceError) as info:
        open_source("gst:rtspsrc location=rtsp://admin:s3cret@10.0.0.5/live user-pw=s3cret ! decodebin")
    assert "s3cret" not in str(info.value)
    assert "rtsp://***:***@10.0.0.5/live" in str(info.value)


# --------------------------------------------------------------------------- files


def test_file_source_reads_every_frame_then_none(
    video_file: pathlib.Path, scene_frames: list[tuple[np.ndarray, FrameTruth]]
) -> None:
    source = open_source(str(video_file))
    assert not source.is_live
    source.open()
    assert isinstance(source, OpenCVSource) and source.frame_count == VIDEO_FRAMES
    images = []
    while (frame := source.read()) is not None:
        assert not frame.corrupt and frame.image is not None and frame.truth is None
        images.append(frame.image)
    assert source.read() is None  # stays at the end
    source.close()
    source.close()  # twice is fine
    assert len(images) == VIDEO_FRAMES
    for image, (original, _truth) in zip(images, scene_frames, strict=True):
        assert image.shape == original.shape and image.dtype == np.uint8
        # MJPEG is lossy but close; the right frame in the right place
        assert np.abs(image.astype(np.int16) - original).mean() < 6.0


def test_missing_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nope.mp4"
    source = open_source(str(path))
    with pytest.raises(SourceError) as info:
        source.open()
    assert f"camera source '{path}': file not found" in str(info.value)


def test_file_that_is_not_a_video(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "notes.avi"
    path.write_bytes(b"this is not a video\n" * 500)
    with pytest.raises(SourceError, match="cannot decode this file"):
        open_source(str(path)).open()


def test_directory_is_not_a_video(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SourceError, match="not a regular file"):
        open_source(str(tmp_path)).open()


def test_corrupt_video_is_read_to_the_end(corrupt_video: pathlib.Path) -> None:
    source = OpenCVSource(str(corrupt_video))
    source.open()
    good = corrupt = 0
    for _ in range(10 * VIDEO_FRAMES):  # a hang would be a bug too
        frame = source.read()
        if frame is None:
            break
        if frame.corrupt:
            assert frame.image is None
            corrupt += 1
        else:
            assert frame.image is not None and frame.image.shape == (240, 320, 3)
            good += 1
    else:
        pytest.fail("the corrupt file never ended")
    assert source.read() is None  # stays ended
    source.close()
    # the first third is intact; the garbage cost frames, and every lost one is counted
    assert good >= VIDEO_FRAMES // 4
    assert corrupt >= 1
    assert good + corrupt == VIDEO_FRAMES


def test_damaged_frames_are_reported_in_place(damaged_video: pathlib.Path) -> None:
    source = OpenCVSource(str(damaged_video))
    source.open()
    marks = []
    while (frame := source.read()) is not None:
        marks.append(frame.corrupt)
    source.close()
    assert len(marks) == VIDEO_FRAMES
    assert [i for i, corrupt in enumerate(marks) if corrupt] == list(DAMAGED_FRAMES)


# --------------------------------------------------------------------------- devices and streams


def test_missing_v4l2_device() -> None:
    with pytest.raises(SourceError, match="no such device"):
        open_source("/dev/video99").open()


@pytest.mark.timeout(30)
def test_unreachable_rtsp_fails_fast(closed_port: int) -> None:
    source = open_source(f"rtsp://admin:s3cret@127.0.0.1:{closed_port}/cam")
    assert source.is_live
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        source.open()
    assert time.monotonic() - started < 10.0
    message = str(info.value)
    # said as it is: refused, not "could not open the stream within 5 s"
    assert f"connection refused by 127.0.0.1:{closed_port}" in message, message
    assert "s3cret" not in message and "rtsp://***:***@" in message


@pytest.mark.timeout(120)
def test_tagging_a_damaged_video_leaves_no_ffmpeg_lines_on_the_console(damaged_video: pathlib.Path) -> None:
    # FFmpeg complains about every broken frame ([mjpeg @ 0x...] ...); the command says what it skipped itself
    out = damaged_video.with_name("tags.jsonl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    proc = subprocess.run([sys.executable, "-m", "agent.cli.main", "tag", str(damaged_video), "--out", str(out),
                           "--video-step", "1"], capture_output=True, text=True, timeout=100, env=env)
    assert proc.returncode in (0, 3), proc.stderr
    assert "@ 0x" not in proc.stderr + proc.stdout and "WARN" not in proc.stderr, proc.stderr
    assert out.read_text().count("\n") > 0


@pytest.mark.timeout(30)
def test_a_camera_name_that_does_not_resolve_is_said_so() -> None:
    with pytest.raises(SourceError, match="cannot resolve the host 'no-such-camera.invalid'"):
        open_source("rtsp://no-such-camera.invalid/cam").open()  # .invalid never resolves (RFC 2606)


@pytest.mark.timeout(60)
def test_failed_opens_leave_no_opencv_or_ffmpeg_lines_on_stderr(closed_port: int) -> None:
    # a camera that refuses, tried three times as the grabber's reconnects do: only our own message counts
    code = ("import sys\nfrom agent.capture.sources import open_source\nfrom agent.errors import SourceError\n"
            f"source = open_source('rtsp://127.0.0.1:{closed_port}/cam')\n"
            "for _ in range(3):\n"
            "    try:\n        source.open()\n    except SourceError as exc:\n        print(exc)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    lines = quiet.stdout.splitlines()  # our three messages, nothing of FFmpeg's between them
    assert len(lines) == 3 and all("connection refused by" in line for line in lines), quiet.stdout
    # asked for in the environment, their lines are there (OpenCV sends FFmpeg's to stdout then): the quiet
    # above is our doing
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50,
                          env={**env, "OPENCV_FFMPEG_LOGLEVEL": "16", "OPENCV_LOG_LEVEL": "WARNING"})
    assert "Connection to tcp://" in loud.stdout + loud.stderr and "WARN" in loud.stderr, loud


@pytest.mark.timeout(30)
def test_silent_rtsp_server_hits_the_open_timeout() -> None:
    # accepts the TCP connection, never answers: only the open timeout ends the wait
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        source = OpenCVSource(f"rtsp://127.0.0.1:{port}/cam", open_timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(SourceError, match="within 1 s"):
            source.open()
        assert time.monotonic() - started < 5.0
