"""``decoder_scaling: lowres``: an MJPEG camera decodes small for the model (FFmpeg's lowres) once the model has
asked for its window, and decodes the kept packet at full size only when the full frame is needed, giving the
same full-size pixels as without it. Against real MJPEG and H.264 files."""

from __future__ import annotations

import pathlib
import threading

import cv2
import numpy as np
import pytest

from agent.config.models import CameraConfig

av = pytest.importorskip("av", reason="PyAV (the video extra) is not installed")

from agent.capture.decoders import camera_source  # noqa: E402
from agent.capture.lowres import LowresPicture, lowres_level  # noqa: E402
from agent.capture.picture_av import DecodedPicture  # noqa: E402
from agent.capture.pyav_source import PyAVSource  # noqa: E402

FRAMES = 8
WINDOW = (320, 240)  # the letterbox window of a 1280x960 frame in a 320x256 input


@pytest.fixture(scope="module")
def mjpeg_960(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """8 frames of the conveyor scaled to 1280x960, MJPEG in .avi (OpenCV's writer, as the bench video)."""
    from agent.capture.synthetic import ConveyorScene

    path = tmp_path_factory.mktemp("lowres") / "conveyor.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, (1280, 960))
    scene = ConveyorScene(seed=5)
    for _ in range(FRAMES):
        writer.write(cv2.resize(scene.next_frame()[0], (1280, 960), interpolation=cv2.INTER_LINEAR))
    writer.release()
    return path


@pytest.mark.parametrize(("frame", "window", "level"), [
    ((1280, 960), (320, 240), 2),  # exactly a quarter
    ((1280, 960), (321, 240), 1),  # a pixel more than a quarter: a half
    ((1920, 1080), (320, 180), 2),  # 480x270 covers it, 240x135 does not
    ((1280, 960), (160, 120), 3),  # the smallest FFmpeg has
    ((1280, 960), (20, 15), 3),
    ((640, 480), (640, 480), 0),  # no reduction covers it
    ((1281, 961), (321, 241), 2),  # FFmpeg rounds up: 321x241
])
def test_the_largest_reduction_that_covers_the_window(frame: tuple[int, int], window: tuple[int, int],
                                                      level: int) -> None:
    assert lowres_level(*frame, *window) == level


def _frames(path: pathlib.Path, scaling: str | None) -> list[tuple[object, np.ndarray | None, np.ndarray]]:
    """Per frame: its picture, the model's window (asked as the detector asks) and the full-size BGR image."""
    source = PyAVSource(str(path), model_scaling=scaling)
    source.open()
    out = []
    try:
        while (frame := source.read()) is not None:
            picture = frame.picture
            assert picture is not None
            window = picture.scaled_bgr(*WINDOW)
            out.append((picture, window, picture.bgr()))
    finally:
        source.close()
    return out


def test_mjpeg_decodes_small_after_the_model_asks_and_full_size_only_on_use(mjpeg_960: pathlib.Path) -> None:
    plain = _frames(mjpeg_960, None)
    area = _frames(mjpeg_960, "AREA")
    small = _frames(mjpeg_960, "LOWRES")
    assert len(small) == len(plain) == FRAMES
    # the first frame is decoded whole (the model had not asked yet); every later one small
    assert isinstance(small[0][0], DecodedPicture)
    assert all(isinstance(picture, LowresPicture) for picture, _w, _i in small[1:])
    for (picture, window, image), (_p, _w, reference), (_a, area_window, _ai) in zip(small, plain, area,
                                                                                     strict=True):
        assert (picture.width, picture.height) == (1280, 960)  # type: ignore[attr-defined]
        assert np.array_equal(image, reference)  # the full frame, decoded again from the packet: the same pixels
        assert window is not None and area_window is not None and window.shape == (240, 320, 3)
        # a quarter-size IDCT against swscale's area scaling of the full picture: close, not equal
        assert np.abs(window.astype(np.int16) - area_window).mean() < 3.0


def test_the_full_frame_is_decoded_once_for_every_thread(mjpeg_960: pathlib.Path) -> None:
    source = PyAVSource(str(mjpeg_960), model_scaling="LOWRES")
    source.open()
    try:
        first = source.read()
        assert first is not None and first.picture is not None
        first.picture.scaled_bgr(*WINDOW)  # the model asks: the next frames are decoded small
        later = source.read()
    finally:
        source.close()
    assert later is not None and isinstance(later.picture, LowresPicture)
    picture = later.picture
    assert not picture.converted
    got: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: got.append(picture.bgr())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(image is got[0] for image in got) and picture.converted
    assert got[0].shape == (960, 1280, 3)


def test_lowres_on_h264_scales_as_area(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=15, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        rng = np.random.default_rng(2)
        for _ in range(4):
            image = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (15, 15), 5)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode(None))
    lowres = _frames(path, "LOWRES")
    area = _frames(path, "AREA")
    assert len(lowres) == len(area) == 4
    for (picture, window, image), (_p, area_window, area_image) in zip(lowres, area, strict=True):
        assert isinstance(picture, DecodedPicture)  # an inter-coded stream: decoded whole, scaled by swscale
        assert window is not None and area_window is not None
        assert np.array_equal(window, area_window) and np.array_equal(image, area_image)


def test_the_camera_config_takes_lowres() -> None:
    source = camera_source(CameraConfig(id="c1", source="cam.avi", decoder="pyav", decoder_scaling="lowres"))
    assert isinstance(source, PyAVSource) and source.model_scaling == "LOWRES"
    with pytest.raises(ValueError, match="decoder_scaling: lowres needs decoder: pyav"):
        CameraConfig(id="c1", source="cam.avi", decoder="opencv", decoder_scaling="lowres")
