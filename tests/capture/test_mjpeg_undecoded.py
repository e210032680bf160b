"""An intra-only codec (MJPEG) decodes only the frames that are wanted: a frame the fps limit drops is skipped
before its packet is decoded; the frames kept are the same frames with the same pixels as when every packet is
decoded; inter-coded video (H.264) still decodes every packet. Against real MJPEG and H.264 files and a live
MJPEG camera over HTTP (tests/capture/mjpeg_camera.py)."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from agent.capture.grabber import Grabber
from agent.capture.source_frame import SourceFrame
from agent.config.models import CameraConfig
from agent.core.frame import Frame
from agent.publish.local_broker import free_port

from .conftest import DAMAGED_FRAMES, VIDEO_FRAMES, RtspServer, StateRecorder
from .mjpeg_camera import MjpegCamera, load_jpegs, serve

av = pytest.importorskip("av", reason="PyAV (the video extra) is not installed")

from agent.capture.pyav_source import PyAVSource  # noqa: E402

Kept = list[np.ndarray | str]  # per frame read: its image, or "skipped" / "corrupt"


def _every_third(index: int) -> bool:
    return index % 3 == 0


def _read(source: PyAVSource, wanted_at: Callable[[int], bool] | None) -> Kept:
    """Every frame to the end; ``wanted_at(i)``: whether the i-th frame read is wanted (None: all are)."""
    out: Kept = []
    source.open()
    source.wanted = None if wanted_at is None else lambda: wanted_at(len(out))
    try:
        while (frame := source.read()) is not None and len(out) <= 2 * VIDEO_FRAMES:
            out.append("skipped" if frame.skipped else "corrupt" if frame.corrupt else frame.image)
    finally:
        source.close()
    return out


@pytest.fixture(scope="module")
def h264_video(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """40 frames of the conveyor at 320x240 in H.264 (yuv420p), written by PyAV's x264: one key frame."""
    from agent.capture.synthetic import ConveyorScene, SceneSettings

    path = tmp_path_factory.mktemp("h264") / "conveyor.mp4"
    scene = ConveyorScene(seed=3, settings=SceneSettings(width=320, height=240))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=15, options={"preset": "ultrafast", "g": "300"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for _ in range(VIDEO_FRAMES):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(scene.next_frame()[0], format="bgr24")))
        out.mux(stream.encode(None))
    return path


def _count(frames: Kept, what: str) -> int:
    return sum(isinstance(item, str) and item == what for item in frames)


def _same_frames_kept(every: Kept, some: Kept) -> list[int]:
    """The indexes ``some`` kept; each image equal, pixel for pixel, to ``every``'s at that index."""
    assert len(some) == len(every) == VIDEO_FRAMES
    kept = [i for i, image in enumerate(some) if isinstance(image, np.ndarray)]
    for i in kept:
        reference = every[i]
        assert isinstance(reference, np.ndarray) and np.array_equal(some[i], reference), f"frame {i} differs"
    return kept


def test_an_mjpeg_frame_nobody_wants_is_never_decoded(video_file: pathlib.Path) -> None:
    every = _read(PyAVSource(str(video_file)), None)
    source = PyAVSource(str(video_file))
    some = _read(source, _every_third)
    assert _same_frames_kept(every, some) == list(range(0, VIDEO_FRAMES, 3))
    assert _count(some, "skipped") == source.undecoded == VIDEO_FRAMES - len(range(0, VIDEO_FRAMES, 3))
    assert "mjpeg" in source.decoder


def test_a_damaged_mjpeg_frame_nobody_wants_is_skipped_not_corrupt(damaged_video: pathlib.Path) -> None:
    # the damaged frames (10, 11, 25) are all refused: never decoded, so never found broken
    assert all(i % 3 for i in DAMAGED_FRAMES)
    skipping = _read(PyAVSource(str(damaged_video)), _every_third)
    assert _count(skipping, "corrupt") == 0 and _count(skipping, "skipped") == VIDEO_FRAMES - 14
    # decoding every packet (as before) finds them broken: the same frames kept, the damaged ones corrupt
    decoding = _read(PyAVSource(str(damaged_video), decode_every_packet=True), _every_third)
    assert [i for i, image in enumerate(decoding) if isinstance(image, str) and image == "corrupt"] == list(
        DAMAGED_FRAMES)
    kept = [i for i, image in enumerate(decoding) if isinstance(image, np.ndarray)]
    assert kept == [i for i, image in enumerate(skipping) if isinstance(image, np.ndarray)]
    assert all(np.array_equal(skipping[i], decoding[i]) for i in kept)


def test_h264_still_decodes_every_packet(h264_video: pathlib.Path) -> None:
    every = _read(PyAVSource(str(h264_video)), None)
    source = PyAVSource(str(h264_video))
    some = _read(source, _every_third)
    # the kept frames are exact only because the refused ones were decoded (they are the kept ones' references)
    assert _same_frames_kept(every, some) == list(range(0, VIDEO_FRAMES, 3))
    assert source.undecoded == 0 and _count(some, "skipped") == VIDEO_FRAMES - 14


# --------------------------------------------------------------------------- a live MJPEG camera


class _Clock:
    """Camera time: each frame read is 1/30 s after the one before (a 30 fps camera), however fast the box is."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def mjpeg_camera(video_file: pathlib.Path) -> Iterator[MjpegCamera]:
    camera = serve(load_jpegs(video_file))  # unpaced, looping: the clock, not the wire, times the frames
    try:
        yield camera
    finally:
        camera.shutdown()
        camera.server_close()


def _grab(url: str, decode_every_packet: bool, count: int) -> tuple[list[Frame], PyAVSource]:
    """The first ``count`` frames a camera with ``fps: 10`` keeps of the 30 fps stream."""
    clock = _Clock()

    class CameraTimed(PyAVSource):
        def read(self) -> SourceFrame | None:
            clock.now += 1 / 30
            return super().read()

    source = CameraTimed(url, decode_every_packet=decode_every_packet)
    camera = CameraConfig(id="mj", source=url, fps=10, realtime=False, decoder="pyav")  # realtime: none lost
    grabber = Grabber(camera, source_factory=lambda _spec: source, clock=clock)
    grabber.start()
    try:
        frames = [grabber.take(timeout=10.0) for _ in range(count)]
    finally:
        assert grabber.stop(timeout=5.0)
    assert all(frame is not None for frame in frames), grabber.stats()
    return [frame for frame in frames if frame is not None], source


@pytest.mark.timeout(60)
def test_a_live_mjpeg_camera_keeps_the_same_frames_and_decodes_a_third(
        mjpeg_camera: MjpegCamera, video_file: pathlib.Path) -> None:
    every = _read(PyAVSource(str(video_file)), None)
    before, decoding = _grab(mjpeg_camera.url, True, 16)
    after, skipping = _grab(mjpeg_camera.url, False, 16)
    assert [f.sequence for f in after] == [f.sequence for f in before] == list(range(1, 48, 3))
    for old, new in zip(before, after, strict=True):
        assert np.array_equal(new.image, old.image)
        reference = every[(new.sequence - 1) % VIDEO_FRAMES]  # the looping camera: frame n of the file
        assert isinstance(reference, np.ndarray) and np.array_equal(new.image, reference)
    assert decoding.undecoded == 0
    assert skipping.undecoded >= 2 * 15  # two of every three frames never decoded
    assert "mjpeg" in skipping.decoder


@pytest.mark.timeout(90)
def test_an_rtsp_mjpeg_camera_decodes_only_the_frames_its_fps_limit_keeps(
        rtsp_support: None, tmp_path: pathlib.Path, states: StateRecorder) -> None:
    server = RtspServer(free_port(), tmp_path / "rtsp-server.log", codec="mjpeg")  # 15 fps
    server.start()
    try:
        camera = CameraConfig(id="rtspmj", source=server.url, fps=5, decoder="pyav")
        grabber = Grabber(camera, on_state=states)
        source = grabber.source
        assert isinstance(source, PyAVSource)
        grabber.start()
        try:
            states.wait_for("online", timeout=20.0)
            taken = [grabber.take(timeout=5.0) for _ in range(6)]
        finally:
            assert grabber.stop(timeout=5.0)
    finally:
        server.kill()
    stats = grabber.stats()
    assert all(f is not None and f.image.shape == (server.height, server.width, 3) for f in taken)
    assert "pyav mjpeg" in source.decoder and stats.corrupt == 0
    assert stats.frames_read >= 15 and source.undecoded >= stats.frames_read // 2  # about two in three
    assert source.undecoded == stats.skipped_fps  # every frame the limit dropped was left undecoded


def test_the_mjpeg_camera_names_what_it_serves(h264_video: pathlib.Path) -> None:
    proc = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("mjpeg_camera.py")),
                           str(h264_video)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "a h264 video; expected MJPEG" in proc.stderr
