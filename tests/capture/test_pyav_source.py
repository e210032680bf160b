"""The PyAV decoder against real files, a real RTSP server and sockets: the behaviour the OpenCV source has
(tests/capture/test_sources.py, test_rtsp.py), run on both decoders, plus what only PyAV does (skipping
deblocking, hardware decoding's fall back to the CPU, the choice of decoder)."""

from __future__ import annotations

import logging
import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from agent.capture.grabber import Grabber
from agent.capture.sources import FrameSource, OpenCVSource, SyntheticSource
from agent.config.models import CameraConfig
from agent.core.frame import FrameTruth
from agent.errors import SourceError

from .conftest import DAMAGED_FRAMES, VIDEO_FRAMES, RtspServer, StateRecorder

av = pytest.importorskip("av", reason="PyAV (the video extra) is not installed")

from agent.capture import pyav_source  # noqa: E402
from agent.capture.decoders import camera_source, uses_pyav  # noqa: E402
from agent.capture.pyav_source import PyAVSource  # noqa: E402

Factory = Callable[..., FrameSource]
DECODERS: dict[str, Factory] = {"opencv": OpenCVSource, "pyav": PyAVSource}


@pytest.fixture(params=list(DECODERS))
def make(request: pytest.FixtureRequest) -> Factory:
    """Each decoder's source class, so that a test runs on both."""
    return DECODERS[request.param]


@pytest.fixture(scope="module")
def h264_video(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """40 frames of the conveyor at 320x240 in H.264 (yuv420p, as IP cameras send), written by PyAV's x264."""
    from agent.capture.synthetic import ConveyorScene, SceneSettings

    path = tmp_path_factory.mktemp("h264") / "conveyor.mp4"
    scene = ConveyorScene(seed=3, settings=SceneSettings(width=320, height=240))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=15, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for _ in range(VIDEO_FRAMES):
            frame = av.VideoFrame.from_ndarray(scene.next_frame()[0], format="bgr24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _read_all(source: FrameSource, limit: int = 10 * VIDEO_FRAMES) -> list[np.ndarray | None]:
    """Every frame's image (None: corrupt) to the end; a source that never ends fails the test."""
    source.open()
    images: list[np.ndarray | None] = []
    try:
        while (frame := source.read()) is not None:
            assert frame.corrupt == (frame.image is None)
            images.append(frame.image)
            if len(images) > limit:
                pytest.fail(f"{source!r} never ended")
        assert source.read() is None  # stays at the end
    finally:
        source.close()
    source.close()  # twice is fine
    return images


# --------------------------------------------------------------------------- files, on both decoders


def test_a_file_is_read_to_the_end(make: Factory, video_file: pathlib.Path,
                                   scene_frames: list[tuple[np.ndarray, FrameTruth]]) -> None:
    source = make(str(video_file))
    assert not source.is_live
    images = _read_all(source)
    assert len(images) == VIDEO_FRAMES
    for image, (original, _truth) in zip(images, scene_frames, strict=True):
        assert image is not None and image.shape == original.shape and image.dtype == np.uint8
        assert np.abs(image.astype(np.int16) - original).mean() < 6.0  # MJPEG: lossy but close


def test_damaged_frames_are_reported_in_place(make: Factory, damaged_video: pathlib.Path) -> None:
    images = _read_all(make(str(damaged_video)))
    assert len(images) == VIDEO_FRAMES
    assert [i for i, image in enumerate(images) if image is None] == list(DAMAGED_FRAMES)


def test_a_corrupt_file_is_read_to_the_end_and_every_lost_frame_counted(make: Factory,
                                                                      corrupt_video: pathlib.Path) -> None:
    images = _read_all(make(str(corrupt_video)))
    good = sum(image is not None for image in images)
    assert good >= VIDEO_FRAMES // 4 and len(images) - good >= 1
    assert len(images) == VIDEO_FRAMES


@pytest.mark.parametrize(("name", "content", "message"), [
    # nothing there
    ("nope.mp4", None, "file not found"),
    # bytes that are no video
    ("notes.avi", b"this is not a video\n" * 500, "cannot decode this file"),
    # a directory
    ("", None, "not a regular file"),
])
def test_a_bad_file_says_what_is_wrong(make: Factory, tmp_path: pathlib.Path, name: str, content: bytes | None,
                                       message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SourceError, match=message) as info:
        make(str(path)).open()
    assert str(info.value).startswith(f"camera source '{path}'")


def test_read_before_open_is_an_error(make: Factory, video_file: pathlib.Path) -> None:
    with pytest.raises(SourceError, match="before open"):
        make(str(video_file)).read()


def test_pyav_gives_opencvs_h264_picture_exactly(h264_video: pathlib.Path) -> None:
    theirs = _read_all(OpenCVSource(str(h264_video)))
    ours = _read_all(PyAVSource(str(h264_video)))
    assert len(ours) == len(theirs) == VIDEO_FRAMES
    for a, b in zip(ours, theirs, strict=True):
        assert a is not None and b is not None and a.shape == (240, 320, 3)
        assert np.array_equal(a, b)  # the same decoder and the same swscale conversion: the same pixels


@pytest.mark.parametrize("fmt", ["yuvj420p", "yuv422p", "gray", "nv12"])
def test_every_pixel_format_becomes_bgr(fmt: str) -> None:
    # what cameras and hardware decoders hand out: full-range JPEG YUV, 4:2:2, mono, NV12 (NVDEC, Quick Sync)
    rng = np.random.default_rng(1)
    bgr = cv2.GaussianBlur(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), (9, 9), 3)
    if fmt == "gray":
        bgr = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    image = pyav_source.to_bgr(av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format=fmt))
    assert image.shape == (64, 96, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(np.int16) - bgr).mean() < 4.0  # the picture survives the round trip


def test_skipping_deblocking_decodes_every_frame_and_says_so(h264_video: pathlib.Path) -> None:
    source = PyAVSource(str(h264_video), skip_deblocking=True)
    fast = _read_all(source)
    plain = _read_all(PyAVSource(str(h264_video)))
    assert len(fast) == len(plain) == VIDEO_FRAMES and all(image is not None for image in fast)
    source.open()
    assert "deblocking skipped" in source.decoder and "h264" in source.decoder
    source.close()
    # the picture changes a little (no deblocking), not a lot
    diffs = [np.abs(a.astype(np.int16) - b).mean() for a, b in zip(fast, plain, strict=True)
             if a is not None and b is not None]
    assert max(diffs) < 4.0


def test_frame_threads_decode_the_same_frames(h264_video: pathlib.Path) -> None:
    threaded = _read_all(PyAVSource(str(h264_video), threads=0))
    single = _read_all(PyAVSource(str(h264_video), threads=1))
    assert len(threaded) == VIDEO_FRAMES
    assert all(a is not None and b is not None and np.array_equal(a, b)
               for a, b in zip(threaded, single, strict=True))


def test_pyav_leaves_no_ffmpeg_lines_on_the_console(damaged_video: pathlib.Path) -> None:
    code = ("from agent.capture.pyav_source import PyAVSource\n"
            f"s = PyAVSource({str(damaged_video)!r})\ns.open()\nn = 0\n"
            "while (f := s.read()) is not None:\n    n += f.corrupt\nprint(n)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(len(DAMAGED_FRAMES)) and proc.stderr == "", proc.stderr


# --------------------------------------------------------------------------- hardware decoding: the fall back


@pytest.fixture(autouse=True)
def _hardware_not_yet_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a fresh process does: no hardware fall back said yet."""
    from agent.capture import hwdecode

    monkeypatch.setattr(hwdecode, "_said", set())


def test_a_missing_gpu_falls_back_to_the_cpu_with_one_warning(h264_video: pathlib.Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    source, other = (PyAVSource(str(h264_video), hwaccel="cuda") for _ in range(2))
    with caplog.at_level(logging.DEBUG, logger="agent.capture.hwdecode"):
        source.open()
        if source.hardware.active is not None:
            source.close()
            pytest.skip("this box has a working CUDA decoder: the fall back cannot be shown here")
        frame = source.read()
        source.open()  # a reconnect does not try the device again, nor warn again
        source.close()
        other.open()  # a second camera finds the same: not warned again
        other.close()
    assert frame is not None and frame.image is not None and frame.image.shape == (240, 320, 3)
    lines = [r for r in caplog.records if "hardware decoding" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.WARNING, logging.DEBUG], caplog.text
    assert "hwaccel cuda" in lines[0].getMessage() and "decoding on the CPU" in lines[0].getMessage()
    for src in (source, other):
        assert src.decoder.startswith("pyav h264 on the CPU (hwaccel cuda unavailable: cuda: ")


def test_a_device_type_this_ffmpeg_lacks_is_named(h264_video: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    from agent.capture.hwdecode import available_devices

    missing = next((d for d in ("vaapi", "videotoolbox", "d3d11va") if d not in available_devices()), None)
    if missing is None:
        pytest.skip("this PyAV knows every device type")
    source = PyAVSource(str(h264_video), hwaccel=missing)
    with caplog.at_level(logging.WARNING, logger="agent.capture.hwdecode"):
        source.open()
        assert source.read() is not None
        source.close()
    assert f"{missing}: not in this PyAV's FFmpeg, which knows " in caplog.text


def test_auto_hardware_decoding_says_what_it_tried_at_info(h264_video: pathlib.Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    source = PyAVSource(str(h264_video), hwaccel="auto")
    with caplog.at_level(logging.INFO, logger="agent.capture.hwdecode"):
        source.open()
        frames = [source.read() for _ in range(3)]
        source.close()
    assert all(f is not None and f.image is not None for f in frames)
    if source.hardware.active is None:
        lines = [r for r in caplog.records if "hardware decoding" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == logging.INFO


# --------------------------------------------------------------------------- which decoder a camera gets


@pytest.mark.parametrize(("decoder", "source", "expected"), [
    ("auto", "clip.mp4", PyAVSource),  # PyAV is installed here: files through PyAV
    ("auto", "rtsp://cam.local/live", PyAVSource),  # ... and streams
    ("auto", "/dev/video0", OpenCVSource),  # V4L2 stays with OpenCV
    ("auto", "synthetic://conveyor", SyntheticSource),  # a scene is no video
    ("opencv", "clip.mp4", OpenCVSource),  # asked for
    ("pyav", "http://cam.local/video.mjpg", PyAVSource),  # asked for
])
def test_the_camera_gets_the_decoder_it_asks_for(decoder: str, source: str, expected: type) -> None:
    camera = CameraConfig(id="c1", source=source, decoder=decoder)  # type: ignore[arg-type]
    assert isinstance(camera_source(camera), expected)


@pytest.mark.parametrize(("source", "message"), [
    ("/dev/video0", r"the pyav decoder reads video files and rtsp:// or http\(s\):// streams"),
    ("synthetic://conveyor", "decoder: pyav decodes video files and streams"),
])
def test_pyav_where_it_cannot_decode_says_so(source: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        camera_source(CameraConfig(id="c1", source=source, decoder="pyav"))


def test_pyav_asked_for_without_pyav_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.capture.decoders as decoders

    monkeypatch.setattr(decoders, "pyav_installed", lambda: False)
    with pytest.raises(SourceError, match=r"pip install 'edge-agent\[video\]'"):
        uses_pyav(CameraConfig(id="c1", source="clip.mp4", decoder="pyav"))
    assert uses_pyav(CameraConfig(id="c1", source="clip.mp4")) is False  # auto: OpenCV then


def test_decoding_options_need_the_pyav_decoder() -> None:
    with pytest.raises(ValueError, match="skip_deblocking: True needs decoder: pyav"):
        CameraConfig(id="c1", source="clip.mp4", decoder="opencv", skip_deblocking=True)
    with pytest.raises(ValueError, match="decoder_scaling: planes needs decoder: pyav"):
        CameraConfig(id="c1", source="clip.mp4", decoder="opencv", decoder_scaling="planes")
    CameraConfig(id="c1", source="clip.mp4", decoder="opencv", decoder_scaling="none")  # says what is done anyway
    with pytest.raises(ValueError, match="decoder_scaling"):
        CameraConfig(id="c1", source="clip.mp4", decoder_scaling="lanczos")  # type: ignore[arg-type]
    for value in ("none", "planes", "area", "bilinear", "point", "fast_bilinear", "bicubic"):
        source = camera_source(CameraConfig(id="c1", source="clip.mp4", decoder="pyav", decoder_scaling=value))
        assert isinstance(source, PyAVSource)
        assert source.model_scaling == (None if value == "none" else value.upper())


# --------------------------------------------------------------------------- streams, on both decoders


@pytest.mark.timeout(30)
def test_unreachable_rtsp_fails_fast_without_the_password(make: Factory, closed_port: int) -> None:
    source = make(f"rtsp://admin:s3cret@127.0.0.1:{closed_port}/cam")
    assert source.is_live
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        source.open()
    assert time.monotonic() - started < 10.0
    assert f"connection refused by 127.0.0.1:{closed_port}" in str(info.value)
    assert "s3cret" not in str(info.value) and "rtsp://***:***@" in str(info.value)


@pytest.mark.timeout(30)
def test_a_silent_rtsp_server_hits_the_open_timeout(make: Factory) -> None:
    with socket.socket() as listener:  # accepts the TCP connection, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        source = make(f"rtsp://127.0.0.1:{listener.getsockname()[1]}/cam", open_timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(SourceError, match="within 1 s"):
            source.open()
        assert time.monotonic() - started < 5.0


@pytest.mark.timeout(90)
def test_pyav_rtsp_outage_read_timeout_and_recovery(rtsp_server: RtspServer, states: StateRecorder) -> None:
    cam = CameraConfig(id="rtsp1", source=rtsp_server.url, reconnect_initial_s=0.2, reconnect_max_s=1.0)
    grabber = Grabber(cam, source_factory=lambda spec: PyAVSource(spec, open_timeout_s=5.0, read_timeout_s=2.0),
                      on_state=states)
    assert grabber.realtime and grabber.source.is_live
    grabber.start()
    try:
        states.wait_for("online", timeout=20.0)
        frame = grabber.take(timeout=5.0)
        assert frame is not None and frame.image.shape == (rtsp_server.height, rtsp_server.width, 3)
        first = frame.sequence
        rtsp_server.kill()  # the camera loses power: the read times out, the grabber reconnects
        lost = states.wait_for("reconnecting", timeout=15.0)
        while grabber.take(timeout=0.2) is not None:
            pass
        # the frame the server was sending when it died may arrive cut off: that one is corrupt
        cut_off = grabber.stats().corrupt
        assert cut_off <= 1
        rtsp_server.start()
        assert states.wait_for("online", timeout=20.0, occurrence=2) > lost
        frame = grabber.take(timeout=5.0)
        assert frame is not None and frame.sequence > first
    finally:
        assert grabber.stop(timeout=5.0)
    assert states.states[:4] == ["connecting", "online", "reconnecting", "online"]
    stats = grabber.stats()
    assert stats.reconnects >= 1
    # joining a stream between key frames is no corrupt frame (OpenCV counts none either)
    assert stats.corrupt == cut_off


@pytest.mark.timeout(90)
def test_pyav_does_not_convert_frames_the_fps_limit_drops(rtsp_server: RtspServer, states: StateRecorder,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    converted = 0
    real = pyav_source.to_bgr

    def counting(frame: object, swscale: object = None) -> np.ndarray:
        nonlocal converted
        converted += 1
        return real(frame, swscale)  # type: ignore[arg-type]

    monkeypatch.setattr(pyav_source, "to_bgr", counting)
    cam = CameraConfig(id="rtsp5", source=rtsp_server.url, fps=5, decoder="pyav")  # the stream sends 15 a second
    grabber = Grabber(cam, on_state=states)
    assert isinstance(grabber.source, PyAVSource)
    grabber.start()
    try:
        states.wait_for("online", timeout=20.0)
        taken = [grabber.take(timeout=5.0) for _ in range(8)]
    finally:
        assert grabber.stop(timeout=5.0)
    stats = grabber.stats()
    assert all(f is not None and f.image.shape == (rtsp_server.height, rtsp_server.width, 3) for f in taken)
    assert stats.frames_read >= 20 and converted <= stats.frames_read // 2  # about one in three converted
    assert stats.skipped_fps >= stats.frames_read - converted - 1


def test_doctor_says_which_decoder_runs(h264_video: pathlib.Path) -> None:
    from agent.ops.doctor import _check_cameras

    cameras = [CameraConfig(id="plain", source=str(h264_video)),
               CameraConfig(id="gpu", source=str(h264_video), hwaccel="cuda", skip_deblocking=True),
               CameraConfig(id="old", source=str(h264_video), decoder="opencv")]
    rows = {c.name: c for c in _check_cameras(cameras, timeout_s=20.0)}
    assert all(row.status == "OK" for row in rows.values()), rows
    assert rows["camera plain"].detail.endswith("decoded by pyav h264 on the CPU, 1 thread(s)")
    if "on cuda" not in rows["camera gpu"].detail:  # the usual box: no NVIDIA decoder
        assert "decoded by pyav h264 on the CPU (hwaccel cuda unavailable: cuda: " in rows["camera gpu"].detail
    assert "deblocking skipped" in rows["camera gpu"].detail
    assert "decoded by opencv " in rows["camera old"].detail


@pytest.mark.timeout(60)
def test_a_wrong_stream_path_is_said_so(make: Factory, rtsp_server: RtspServer) -> None:
    url = rtsp_server.url.rsplit("/", 1)[0] + "/no-such-stream"  # the camera answers, the path is wrong
    with pytest.raises(SourceError, match="accepts connections but did not serve the stream"):
        make(url, open_timeout_s=3.0).open()
