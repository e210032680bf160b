"""The persistent swscale context (agent.capture.swscale) against PyAV's own per-frame conversion, on real
video: the same pixels, frames of several sizes and formats through one context, and several threads at once."""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV (the video extra) is not installed")

from agent.capture.pyav_source import PyAVSource  # noqa: E402
from agent.capture.swscale import Swscale  # noqa: E402


def _decoded(path: pathlib.Path) -> Iterator[Any]:
    with av.open(str(path)) as container:
        yield from container.decode(container.streams.video[0])


def _write_h264(path: pathlib.Path, size: tuple[int, int], frames: int, pix_fmt: str = "yuv420p") -> pathlib.Path:
    from agent.capture.synthetic import ConveyorScene, SceneSettings

    scene = ConveyorScene(seed=5, settings=SceneSettings(width=size[0], height=size[1]))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=15, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
        for _ in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(scene.next_frame()[0], format="bgr24")))
        out.mux(stream.encode(None))
    return path


def test_one_context_gives_pyavs_own_pixels(video_file: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # MJPEG (yuvj420p, full range) and H.264 (yuv420p, limited range) of two sizes, alternately through one
    # context: swscale reconfigures it when the size or format changes, as after a stream reopens
    h264 = _write_h264(tmp_path / "wide.mp4", (416, 234), 12)
    swscale = Swscale()
    compared = 0
    for a, b in zip(_decoded(video_file), _decoded(h264), strict=False):
        for frame in (a, b):
            ours = swscale.bgr(frame)
            assert ours.shape == (frame.height, frame.width, 3) and ours.dtype == np.uint8
            assert np.array_equal(ours, frame.to_ndarray(format="bgr24"))
            compared += 1
    assert compared == 24


def test_the_source_hands_out_pyavs_own_pixels(video_file: pathlib.Path) -> None:
    source = PyAVSource(str(video_file))
    source.open()
    try:
        for frame in _decoded(video_file):
            got = source.read()
            assert got is not None and got.image is not None
            assert np.array_equal(got.image, frame.to_ndarray(format="bgr24"))
        assert source.read() is None
    finally:
        source.close()


def test_scaling_gives_the_asked_size(video_file: pathlib.Path) -> None:
    frame = next(_decoded(video_file))
    for interpolation in ("BILINEAR", "AREA", "POINT"):
        small = Swscale(interpolation).bgr(frame, 160, 120)
        assert small.shape == (120, 160, 3)
        expected = frame.reformat(160, 120, "bgr24", interpolation=interpolation).to_ndarray()
        assert np.array_equal(small, expected)


def test_a_context_serves_several_threads(video_file: pathlib.Path) -> None:
    frames = list(_decoded(video_file))
    expected = [f.to_ndarray(format="bgr24") for f in frames]
    swscale = Swscale()
    wrong: list[int] = []

    def work() -> None:
        for i, frame in enumerate(frames):
            if not np.array_equal(swscale.bgr(frame), expected[i]):
                wrong.append(i)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not wrong and not any(t.is_alive() for t in threads)


@pytest.mark.parametrize(("pix_fmt", "colorspace"), [("yuv420p", None), ("yuvj420p", None), ("yuv420p", "ITU709")])
def test_the_planes_scale_as_the_bgr_frame_resized(pix_fmt: str, colorspace: str | None) -> None:
    # resized planes converted small by swscale (the frame's range and colour space): the BGR frame resized
    from agent.capture.synthetic import ConveyorScene
    from agent.capture.yuv_scale import PlaneScaler

    bgr = ConveyorScene(seed=2).next_frame()[0]  # 640x480, as a camera's picture
    yuv = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format=pix_fmt, dst_colorspace=colorspace)
    scaler = PlaneScaler()
    small = scaler(yuv, 320, 240)
    assert small is not None and small.shape == (240, 320, 3) and small.dtype == np.uint8
    resized = cv2.resize(yuv.to_ndarray(format="bgr24"), (320, 240), interpolation=cv2.INTER_LINEAR)
    diff = np.abs(small.astype(np.int16) - resized)
    # rounding, and the chroma upsampled at another size: the still's pixel noise is in its chroma too (decoded
    # video's chroma is smoother: 0.05-0.2 grey levels, tests/capture/test_picture_av.py)
    assert diff.mean() < 1.5 and diff.max() <= 10
    assert scaler(yuv, 63, 48) is None  # an odd size: declined, the caller resizes the BGR frame


@pytest.mark.parametrize("pix_fmt", ["yuv422p", "nv12", "gray", "bgr24"])
def test_the_planes_decline_other_formats(pix_fmt: str) -> None:
    from agent.capture.yuv_scale import PlaneScaler

    frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 90, np.uint8), format="bgr24").reformat(format=pix_fmt)
    assert PlaneScaler()(frame, 32, 24) is None


def test_a_bad_scaling_is_refused_before_anything_opens() -> None:
    with pytest.raises(ValueError, match="model_scaling 'LANCZOS': expected None or one of PLANES, LOWRES, BILINEAR"):
        PyAVSource("/nonexistent.mp4", model_scaling="LANCZOS")
    with pytest.raises(ValueError, match="swscale interpolation 'nearest': expected one of BILINEAR"):
        Swscale("nearest")
