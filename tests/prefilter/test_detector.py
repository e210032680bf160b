"""The ONNX detector on real (tiny) ONNX models: decoding end to end and bad models."""

from __future__ import annotations

import numpy as np
import pytest

from agent.config.models import ModelConfig
from agent.errors import ModelError, ModelLayoutError
from agent.prefilter.detector import YoloDetector
from tests.prefilter.onnx_builders import constant_output_model, yolo_output

META = {"task": "detect", "names": "{0: 'scratch', 1: 'hole'}", "imgsz": "[32, 32]", "stride": "32"}


def test_detections_come_back_in_source_pixels(tmp_path):
    # 64x48 image into 32x32: r = 0.5, 32x24, top = round(3.9) = 4.
    # input-pixel box cx=16 cy=16 w=8 h=8 -> (12,12,20,20) -> source ((12-0)/.5, (12-4)/.5, ...) = (24,16,40,32)
    out = yolo_output([(16, 16, 8, 8, 1, 0.9), (5, 5, 4, 4, 0, 0.03)], nc=2, anchors=21)
    path = constant_output_model(tmp_path / "m.onnx", out, metadata=META)
    det = YoloDetector.from_file(path, ModelConfig(path=path, min_score=0.05))
    result = det.infer(np.zeros((48, 64, 3), np.uint8))
    assert [(d.label, round(d.confidence, 3)) for d in result.detections] == [("hole", 0.9)]
    assert result.detections[0].box == pytest.approx((24, 16, 40, 32))
    assert result.model_id.startswith("m@") and len(result.model_id) == len("m@") + 12
    assert det.info.names == ("scratch", "hole") and (det.info.input_w, det.info.input_h) == (32, 32)


def test_sidecar_supplies_names_when_metadata_has_none(tmp_path):
    out = yolo_output([(16, 16, 8, 8, 0, 0.8)], nc=1, anchors=21)
    path = constant_output_model(tmp_path / "plain.onnx", out)
    (tmp_path / "plain.json").write_text('{"task": "detect", "names": ["dent"]}')
    det = YoloDetector.from_file(path)
    assert det.info.names == ("dent",) and det.info.metadata_source == "sidecar plain.json"
    assert det.detect(np.zeros((32, 32, 3), np.uint8)).detections[0].label == "dent"  # the old name still works


@pytest.mark.parametrize(
    ("output", "meta", "message"),
    [
        # a classifier-like output (1, nc): not a detection layout
        (np.zeros((1, 2), np.float32), META, r"expected a YOLOv8 detection output of shape \(batch, 4 \+ classes, "
         r"anchors\) = \(1, 6, 21\) for 2 classes at 32x32, got \[1, 2\]"),
        # an NMS export (1, 300, 6) gets a hint
        (np.zeros((1, 300, 6), np.float32), META, "export without nms"),
        # 3 classes in the output, 2 names in the metadata
        (np.zeros((1, 7, 21), np.float32), META, r"7 rows per anchor, expected 4 box values \+ 2 class scores = 6"),
        # anchors of a 64 px head in a 32 px model
        (np.zeros((1, 6, 84), np.float32), META, "has 84 anchors, a YOLOv8 head at 32x32 has 21"),
    ],
)
def test_wrong_layouts_are_refused_with_what_was_expected(tmp_path, output, meta, message):
    path = constant_output_model(tmp_path / "bad.onnx", output, metadata=meta)
    with pytest.raises(ModelLayoutError, match=message):
        YoloDetector.from_file(path)


def test_classifier_task_is_refused(tmp_path):
    path = constant_output_model(tmp_path / "cls.onnx", np.zeros((1, 2), np.float32),
                                 metadata={**META, "task": "classify"})
    with pytest.raises(ModelError, match="task is 'classify'; YoloDetector runs task 'detect'.*open_prefilter"):
        YoloDetector.from_file(path)


def test_no_names_anywhere(tmp_path):
    path = constant_output_model(tmp_path / "anon.onnx", yolo_output([], 1, 21))
    with pytest.raises(ModelError, match="no class names in the ONNX metadata and no sidecar anon.json"):
        YoloDetector.from_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist; expected an ONNX file"):
        YoloDetector.from_file(tmp_path / "nope.onnx")


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelError, match="could not be loaded by onnxruntime"):
        YoloDetector.from_file(path)


def test_unavailable_provider_names_the_gpu_extra(tmp_path):
    path = constant_output_model(tmp_path / "m.onnx", yolo_output([], 2, 21), metadata=META)
    with pytest.raises(ModelError, match=r"install the `gpu` extra"):
        YoloDetector.from_file(path, ModelConfig(path=path, providers=["CUDAExecutionProvider"]))


def test_buffers_are_reused_between_frames(tmp_path):
    path = constant_output_model(tmp_path / "m.onnx", yolo_output([], 2, 21), metadata=META)
    det = YoloDetector.from_file(path)
    t1, _ = det.preprocess(np.zeros((48, 64, 3), np.uint8))
    t2, _ = det.preprocess(np.full((48, 64, 3), 255, np.uint8))
    assert np.shares_memory(t1, t2) and t1.shape == (1, 3, 32, 32) and float(t2.max()) == pytest.approx(1.0)


def test_the_staged_calls_give_what_infer_gives_on_the_shipped_model():
    from agent.capture.synthetic import render_still
    from agent.config.models import DEFAULT_PREFILTER

    # square: prepare's tensor is preprocess's (model.input_size auto: tests/prefilter/test_input_size.py)
    det = YoloDetector.from_file(DEFAULT_PREFILTER, ModelConfig(path=DEFAULT_PREFILTER, max_batch=2,
                                                                input_size="square"))
    assert det.max_batch == 2
    rng = np.random.default_rng(3)
    small = [render_still(rng)[0] for _ in range(3)]
    frames = [small[0], np.repeat(np.repeat(small[1], 2, 0), 2, 1), small[2]]  # sizes change between frames
    buffer = det.new_input()
    found = 0
    for frame in frames:
        expected = det.infer(frame)
        tensor, plans = det.prepare([frame], buffer)
        assert np.array_equal(tensor, det.preprocess(frame)[0])  # border repainted when the size changes
        (result,) = det.finish(det.forward(tensor), plans, spent_ms=1.0)
        assert result.detections == expected.detections and result.latency_ms >= 1.0
        found += len(result.detections)
    assert found > 0  # the frames show defects: the comparison means something
    with pytest.raises(ValueError, match="3 images for an input buffer of 2 slots"):
        det.prepare(frames, buffer)


def test_concurrent_runs_come_from_the_config_but_the_native_tensorrt_runtime_runs_one_at_a_time():
    from agent.config.models import DEFAULT_PREFILTER
    from agent.prefilter.factory import _wrap
    from agent.prefilter.onnx_session import open_session

    det = YoloDetector.from_file(DEFAULT_PREFILTER, ModelConfig(path=DEFAULT_PREFILTER, concurrent_runs=3))
    assert det.concurrent_runs == 3
    # the native runtime's session (one execution context, one set of device buffers), stood in for by ORT's
    session, meta = open_session(DEFAULT_PREFILTER, ["CPUExecutionProvider"], 1)
    native = _wrap(DEFAULT_PREFILTER, session, meta, ModelConfig(path=DEFAULT_PREFILTER, runtime="tensorrt",
                                                                 concurrent_runs=3))
    assert isinstance(native, YoloDetector) and native.concurrent_runs == 1
    # two forward calls at once on one ONNX Runtime session give what one call at a time gives
    from concurrent.futures import ThreadPoolExecutor

    from agent.capture.synthetic import render_still

    rng = np.random.default_rng(5)
    images = [render_still(rng)[0] for _ in range(6)]
    inputs = []
    for image in images:
        buffer = det.new_input()
        inputs.append(det.prepare([image], buffer))
    alone = [det.forward(tensor) for tensor, _plans in inputs]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda item: det.forward(item[0]), inputs))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))
