"""The lazy picture (agent.core.picture, agent.capture.picture_av) on real video, both decoders: the full-size
BGR image made once, on first use, from any thread; width and height without it; the detector's input scaled
straight from the decoder (and resized from the BGR image where it cannot be); a stream that changes size; the
escalation's full-size frame; decoded frames released with their pictures."""

from __future__ import annotations

import datetime
import gc
import pathlib
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from agent.capture.sources import OpenCVSource
from agent.config.models import DEFAULT_MODEL, AgentConfig, CameraConfig
from agent.core.frame import Frame
from agent.core.picture import Picture
from agent.prefilter.detector import YoloDetector
from agent.prefilter.letterbox import Letterbox, letterbox_to_tensor, plan_letterbox, window_to_tensor
from agent.runtime.inspector import FrameInspector

av = pytest.importorskip("av", reason="PyAV (the video extra) is not installed")

from agent.capture import swscale as swscale_module  # noqa: E402
from agent.capture.decoders import camera_source  # noqa: E402
from agent.capture.picture_av import DecodedPicture  # noqa: E402
from agent.capture.pyav_source import PyAVSource  # noqa: E402
from agent.capture.yuv_scale import PlaneScaler  # noqa: E402

VGA_FRAMES = 30


def _encode(path: pathlib.Path, sizes: list[tuple[int, int]], frames: int, fmt: str = "mp4") -> pathlib.Path:
    """H.264 of the conveyor scene, ``frames`` frames at each of ``sizes`` in turn (a raw ``h264`` stream may
    change size mid-stream, as a camera whose resolution is changed does)."""
    from agent.capture.synthetic import ConveyorScene

    scene = ConveyorScene(seed=7)
    data = b""
    for size in sizes:
        part = path.with_suffix(f".{size[0]}.{fmt}")
        with av.open(str(part), "w", format=fmt if fmt == "h264" else None) as out:
            stream = out.add_stream("libx264", rate=15, options={"preset": "ultrafast"})
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            for _ in range(frames):
                image = cv2.resize(scene.next_frame()[0], size, interpolation=cv2.INTER_LINEAR)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
            out.mux(stream.encode(None))
        data += part.read_bytes()
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def vga_video(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """30 frames of the conveyor at 640x480 H.264: the detector's letterbox scales it by half."""
    return _encode(tmp_path_factory.mktemp("vga") / "vga.mp4", [(640, 480)], VGA_FRAMES)


@pytest.fixture(scope="module")
def detector() -> YoloDetector:
    return YoloDetector.from_file(DEFAULT_MODEL)


def _plan(detector: YoloDetector, width: int, height: int) -> Letterbox:
    """The letterbox the detector plans for a frame of this size (at its fitted input size)."""
    in_h, in_w = detector.sizes.size_for(width, height) if detector.sizes is not None else (
        detector.info.input_h, detector.info.input_w)
    return plan_letterbox(width, height, in_w, in_h)


def _pictures(source: Any) -> Iterator[Picture]:
    source.open()
    try:
        while (got := source.read()) is not None:
            assert got.picture is not None
            yield got.picture
    finally:
        source.close()


def _reference(path: pathlib.Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(container.streams.video[0])]


def test_the_bgr_image_is_made_once_on_first_use(vga_video: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = 0
    real = swscale_module.Swscale.bgr

    def counting(self: Any, frame: Any, width: int | None = None, height: int | None = None) -> np.ndarray:
        nonlocal made
        made += width is None
        return real(self, frame, width, height)

    monkeypatch.setattr(swscale_module.Swscale, "bgr", counting)
    pictures = list(_pictures(PyAVSource(str(vga_video), model_scaling="PLANES")))
    assert len(pictures) == VGA_FRAMES and all(isinstance(p, DecodedPicture) for p in pictures)
    frames = [Frame("cam", i, datetime.datetime.now(datetime.timezone.utc), 0.0, picture=p)
              for i, p in enumerate(pictures)]
    assert [(f.width, f.height) for f in frames] == [(640, 480)] * VGA_FRAMES  # the size without converting
    assert made == 0 and not any(p.converted for p in pictures)
    first = frames[0].image
    assert made == 1 and frames[0].image is first and pictures[0].converted  # once, then the same array
    got: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: got.append(frames[1].image)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert made == 2 and len(got) == 6 and all(g is got[0] for g in got)  # six threads at once: one conversion
    for frame, expected in zip(frames, _reference(vga_video), strict=True):
        assert np.array_equal(frame.image, expected)  # PyAV's own pixels


def test_opencv_frames_are_ready_pictures(vga_video: pathlib.Path, detector: YoloDetector) -> None:
    pictures = list(_pictures(OpenCVSource(str(vga_video))))
    assert len(pictures) == VGA_FRAMES and all(type(p) is Picture and p.converted for p in pictures)
    assert pictures[0].scaled_bgr(320, 240) is None  # cannot scale: the detector resizes the BGR image
    tensor, (plan,) = detector.prepare([pictures[0]], detector.new_input())
    assert plan == _plan(detector, 640, 480)
    expected = np.empty((3, plan.dst_h, plan.dst_w), np.float32)
    letterbox_to_tensor(pictures[0].bgr(), plan, expected, np.empty((plan.new_h, plan.new_w, 3), np.uint8))
    assert np.array_equal(tensor[0], expected)


@pytest.mark.parametrize(("scaling", "closeness"), [("PLANES", 0.5), ("AREA", 2.0), (None, 0.0)])
def test_the_detector_gets_its_input_straight_from_the_decoder(vga_video: pathlib.Path, detector: YoloDetector,
                                                                scaling: str | None, closeness: float) -> None:
    pictures = list(_pictures(PyAVSource(str(vga_video), model_scaling=scaling)))
    buffer = detector.new_input()
    plan = _plan(detector, 640, 480)
    assert (plan.new_w, plan.new_h) == (320, 240)
    for picture, bgr in zip(pictures, _reference(vga_video), strict=True):
        tensor, plans = detector.prepare([picture], buffer)
        assert plans == [plan]
        assert picture.converted == (scaling is None)  # one pass: no full-size BGR image was made
        expected = np.empty((3, plan.dst_h, plan.dst_w), np.float32)
        if scaling is None:  # today's path: the BGR frame resized by OpenCV, bit for bit
            letterbox_to_tensor(bgr, plan, expected, np.empty((plan.new_h, plan.new_w, 3), np.uint8))
        else:  # scaled from the YUV picture: the tensor of that window
            ours = picture.scaled_bgr(plan.new_w, plan.new_h)
            assert ours is not None and ours.shape == (plan.new_h, plan.new_w, 3)
            window_to_tensor(ours, plan, expected)
            resized = cv2.resize(bgr, (plan.new_w, plan.new_h), interpolation=cv2.INTER_LINEAR)
            assert np.abs(ours.astype(np.int16) - resized).mean() < closeness  # the same picture, scaled otherwise
        assert np.array_equal(tensor[0], expected)
    # the boxes map back to the frame as before (the same plan): each confident box of today's path is found
    matched = 0
    for picture, bgr in zip(pictures, _reference(vga_video), strict=True):
        ours = detector.infer(picture).detections
        for d in detector.infer(bgr).detections:
            if d.confidence >= 0.5 and d.box is not None:
                assert any(o.label == d.label and o.box is not None and _iou(o.box, d.box) >= 0.7 for o in ours)
                matched += 1
    assert matched >= 3


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_a_stream_that_changes_size(tmp_path: pathlib.Path, detector: YoloDetector) -> None:
    video = _encode(tmp_path / "resized.h264", [(640, 480), (1024, 576), (640, 480)], 4, fmt="h264")
    pictures = list(_pictures(PyAVSource(str(video), model_scaling="AREA")))
    sizes = [(p.width, p.height) for p in pictures]
    assert sizes == [(640, 480)] * 4 + [(1024, 576)] * 4 + [(640, 480)] * 4
    buffer = detector.new_input()
    for picture in pictures:  # the kept scaler follows the size; each size its own letterbox plan
        _tensor, (plan,) = detector.prepare([picture], buffer)
        assert (plan.src_w, plan.src_h) == (picture.width, picture.height)
    for picture, expected in zip(pictures, _reference(video), strict=True):
        assert np.array_equal(picture.bgr(), expected)


def test_escalation_gets_the_full_size_frame(vga_video: pathlib.Path, detector: YoloDetector) -> None:
    assert camera_source(CameraConfig(id="belt", source=str(vga_video))).model_scaling is None  # default: none
    config = AgentConfig(cameras=[CameraConfig(id="belt", source=str(vga_video), decoder_scaling="area")])
    inspector = FrameInspector(config, detector)
    source = camera_source(config.cameras[0])
    assert isinstance(source, PyAVSource) and source.model_scaling == "AREA"
    picture = next(_pictures(source))
    frame = Frame("belt", 1, datetime.datetime.now(datetime.timezone.utc), time.monotonic(), picture=picture)
    assert inspector.model_input(frame) is picture
    inspection = inspector.inspect(frame)
    assert inspection.event.frame_width == 640 and not picture.converted  # inspected without the BGR frame
    sent = inspector.escalation_frame(inspection.frame)
    assert sent.image.shape == (480, 640, 3) and np.array_equal(sent.image, _reference(vga_video)[0])


def test_decoded_frames_are_released_with_their_pictures(vga_video: pathlib.Path) -> None:
    source = PyAVSource(str(vga_video), model_scaling="AREA")
    kept: list[weakref.ref[Picture]] = []
    source.open()
    try:
        while (got := source.read()) is not None:
            assert got.picture is not None
            got.picture.bgr()
            kept.append(weakref.ref(got.picture))
            del got
        gc.collect()
        assert len(kept) == VGA_FRAMES and all(ref() is None for ref in kept)  # nothing holds a frame once it is done
    finally:
        source.close()


def test_the_size_the_model_asks_for_is_scaled_as_frames_are_decoded(vga_video: pathlib.Path) -> None:
    source = PyAVSource(str(vga_video), model_scaling="PLANES")
    source.open()
    try:
        first = source.read()
        assert first is not None and first.picture is not None
        a, b = first.picture.scaled_bgr(320, 240), first.picture.scaled_bgr(320, 240)
        assert a is not None and b is not None and a is not b  # not asked for before: scaled on each call
        second = source.read()  # decoded after the model asked: scaled to that size as it was decoded
        assert second is not None and second.picture is not None
        ready = second.picture.scaled_bgr(320, 240)
        assert ready is not None and second.picture.scaled_bgr(320, 240) is ready
        frame = next(f for i, f in enumerate(_decoded_frames(vga_video)) if i == 1)
        assert np.array_equal(ready, PlaneScaler()(frame, 320, 240))  # the same pixels as scaled on request
        other = second.picture.scaled_bgr(160, 120)  # another size: made now, and learnt for the next frames
        assert other is not None and other.shape == (120, 160, 3)
        third = source.read()
        assert third is not None and third.picture is not None
        assert third.picture.scaled_bgr(160, 120) is third.picture.scaled_bgr(160, 120)
        assert not third.picture.converted  # no full-size BGR image was made for any of it
    finally:
        source.close()


def _decoded_frames(path: pathlib.Path) -> Iterator[Any]:
    with av.open(str(path)) as container:
        yield from container.decode(container.streams.video[0])
