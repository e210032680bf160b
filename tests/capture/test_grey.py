"""Grey (mono) cameras: capture turns their frames into the BGR the agent works on, and the stages after
capture (snapshots, evaluation) take them; calibration's share is in tests/cli/test_quantize_cli.py."""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np

from agent.capture.sources import OpenCVSource, as_bgr
from agent.config.models import TriageConfig
from agent.core.detections import Detection
from agent.publish.snapshot import render_snapshot
from agent.triage.policy import triage
from tests.cli.test_models_cli import SHIPPED_CLASSIFIER, edge_agent


def _mono_video(path: pathlib.Path, frames: int = 5) -> list[np.ndarray]:
    """A grey-only MJPEG file, as a mono camera's recording."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, (96, 64), isColor=False)
    written = []
    for i in range(frames):
        grey = np.full((64, 96), 40 + 30 * i, np.uint8)
        cv2.rectangle(grey, (10 + i, 10), (30 + i, 30), 230, -1)
        writer.write(grey)
        written.append(grey)
    writer.release()
    return written


def test_a_mono_recording_reads_as_bgr_with_the_grey_in_every_channel(tmp_path: pathlib.Path) -> None:
    written = _mono_video(tmp_path / "mono.avi")
    source = OpenCVSource(str(tmp_path / "mono.avi"))
    source.open()
    got = []
    while (frame := source.read()) is not None:
        assert not frame.corrupt and frame.image is not None
        got.append(frame.image)
    source.close()
    assert len(got) == len(written)
    for image, grey in zip(got, written, strict=True):
        assert image.shape == (64, 96, 3)
        assert np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 1], image[:, :, 2])
        assert np.abs(image[:, :, 0].astype(int) - grey).mean() < 4  # JPEG round trip


def test_a_grey_frame_from_a_camera_driver_is_a_frame_not_corruption() -> None:
    # V4L2 GREY / GStreamer GRAY8 hand OpenCV a HxW (or HxWx1) array; it used to be counted corrupt
    for shape in ((48, 64), (48, 64, 1)):
        frame = OpenCVSource._wrap(np.full(shape, 77, np.uint8))
        assert not frame.corrupt and frame.image is not None and frame.image.shape == (48, 64, 3)
        assert int(frame.image.min()) == int(frame.image.max()) == 77
    assert OpenCVSource._wrap(np.zeros((48, 64, 2), np.uint8)).corrupt  # grey + alpha is no camera frame
    assert OpenCVSource._wrap(np.zeros((48, 64), np.uint16)).corrupt  # 16-bit mono: not 8-bit BGR


def test_a_snapshot_of_a_grey_camera_frame() -> None:
    image = as_bgr(np.full((480, 640), 120, np.uint8))
    decision = triage([Detection("scratch", 0, 0.9, (100.0, 100.0, 200.0, 160.0))], TriageConfig())
    jpeg = render_snapshot(image, decision, max_width=320, quality=85, max_bytes=200_000)
    assert jpeg is not None
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (240, 320, 3)


def test_eval_of_a_classifier_on_grey_files(tmp_path: pathlib.Path) -> None:
    from agent.tooling.dataset.synth import write_classify_dataset

    data = write_classify_dataset(tmp_path / "cls", 1, 6, seed=21)
    for image in sorted(data.glob("*/*/*.jpg")):
        cv2.imwrite(str(image), cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2GRAY))
    out = tmp_path / "report"
    proc = edge_agent("models", "eval", str(SHIPPED_CLASSIFIER), "--data", str(data), "--out", str(out))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "eval: 6/6 images" in proc.stderr
    doc = json.loads((out / "eval.json").read_text())
    assert doc["dataset"]["images"] == 6 and sum(map(sum, doc["confusion_matrix"]["matrix"])) == 6


def test_a_grey_surface_camera_through_the_inference_loop() -> None:
    # the grey scene as a camera, the shipped detector: every frame is inspected and published at its own size
    from agent.capture.grabber import Grabber
    from agent.config.models import DEFAULT_PREFILTER, AgentConfig, CameraConfig, ModelConfig
    from agent.core.event import TagEvent
    from agent.prefilter.factory import open_prefilter
    from agent.runtime.inspector import FrameInspector
    from agent.runtime.loop import InferenceLoop

    class Sink:
        def __init__(self) -> None:
            self.events: list[TagEvent] = []

        def publish_event(self, event: TagEvent) -> int:
            self.events.append(event)
            return len(self.events)

    camera = CameraConfig(id="sheet", source="synthetic://surface?seed=2&fps=0&frames=4")
    grabber, sink = Grabber(camera), Sink()
    loop = InferenceLoop(FrameInspector(AgentConfig(device_id="box", cameras=[camera]),
                                        open_prefilter(DEFAULT_PREFILTER, ModelConfig())),
                         [("sheet", grabber)], sink)
    grabber.start()
    loop.start()
    assert loop.join(60.0) and loop.error is None
    assert [e.sequence for e in sink.events] == [1, 2, 3, 4]
    payload = sink.events[0].to_payload()
    assert payload["frame"] == {"width": 640, "height": 640}
