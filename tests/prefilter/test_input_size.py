"""``model.input_size`` (agent.prefilter.input_size, sized_sessions): the shipped detector's graph rewritten for
another input size gives the same function at its own size, the same boxes at the camera's aspect ratio, and
every size it cannot take is refused with a message naming it."""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from pydantic import ValidationError

from agent.config.models import DEFAULT_MODEL, DEFAULT_PREFILTER, ModelConfig
from agent.errors import ModelError
from agent.prefilter.detector import YoloDetector
from agent.prefilter.factory import open_prefilter
from agent.prefilter.input_size import InputSizeError, fitted_size, make_anchors, resize_detector_input
from agent.prefilter.sized_sessions import SizedSessions
from agent.prefilter.yolo_decode import iou_one_to_many

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / "data" / "golden"
CLASSIFIER = DEFAULT_MODEL.parent / "conveyor-resnet-cls.int8.onnx"


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"images": x})[0])


@pytest.mark.parametrize("path", [DEFAULT_MODEL, DEFAULT_PREFILTER], ids=["fp32", "int8"])
def test_the_rewrite_at_the_exported_size_is_the_same_model_bit_for_bit(path: pathlib.Path) -> None:
    original, rewritten = onnx.load(str(path)), onnx.load(str(path))
    resize_detector_input(rewritten, 320, 320)  # every head constant recomputed by make_anchors
    x = np.random.default_rng(5).random((1, 3, 320, 320), dtype=np.float32)
    assert np.array_equal(_run(rewritten, x), _run(original, x))


def test_make_anchors_is_ultralytics_layout() -> None:
    anchors, strides = make_anchors(64, 96)  # grids 8x12, 4x6, 2x3: 96 + 24 + 6 anchors
    assert anchors.shape == (2, 126) and strides.shape == (1, 126)
    assert anchors[:, :3].T.tolist() == [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5]]  # x fastest
    assert anchors[:, 12].tolist() == [0.5, 1.5]  # the second row of the stride-8 grid
    assert anchors[:, 120:].T.tolist() == [[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5], [2.5, 1.5]]
    assert strides[0, [0, 95, 96, 119, 120, 125]].tolist() == [8, 8, 16, 16, 32, 32]


@pytest.mark.parametrize(("frame", "model", "expected"), [
    ((1280, 960), (320, 320), (256, 320)),  # 4:3: 320x240 padded to 256 rows
    ((640, 480), (320, 320), (256, 320)),
    ((1920, 1080), (320, 320), (192, 320)),  # 16:9: 320x180 -> 192
    ((960, 1280), (320, 320), (320, 256)),  # portrait
    ((640, 640), (320, 320), (320, 320)),  # square frames: the model's own size
    ((4000, 100), (320, 320), (32, 320)),  # a thin strip: at least one stride
    ((1280, 960), (640, 640), (480, 640)),
])
def test_fitted_size(frame: tuple[int, int], model: tuple[int, int], expected: tuple[int, int]) -> None:
    assert fitted_size(frame[0], frame[1], model[1], model[0]) == expected


def _agreement(square: YoloDetector, fitted: YoloDetector, frames: list[np.ndarray]) -> list[float]:
    """IoU of each confident (>= 0.5) detection of one detector with its same-class twin in the other (both ways)."""
    ious = []
    for image in frames:
        a, b = square.infer(image).detections, fitted.infer(image).detections
        for one, other in ((a, b), (b, a)):
            for d in [d for d in one if d.confidence >= 0.5]:
                twins = np.array([o.box for o in other if o.class_id == d.class_id]).reshape(-1, 4)
                ious.append(float(iou_one_to_many(np.array(d.box), twins).max()) if len(twins) else 0.0)
    return ious


def _golden_1280x960() -> list[np.ndarray]:
    return [cv2.resize(cv2.imread(str(p)), (1280, 960)) for p in sorted(GOLDEN.glob("*.jpg"))]


@pytest.mark.parametrize("path", [DEFAULT_MODEL, DEFAULT_PREFILTER], ids=["fp32", "int8"])
def test_at_256x320_the_boxes_are_the_square_models_on_real_1280x960_frames(path: pathlib.Path) -> None:
    square = open_prefilter(path, ModelConfig(path=path, input_size="square", max_batch=1, min_score=0.25))
    fitted = open_prefilter(path, ModelConfig(path=path, input_size="auto", max_batch=1, min_score=0.25))
    assert isinstance(square, YoloDetector) and isinstance(fitted, YoloDetector) and fitted.sizes is not None
    ious = _agreement(square, fitted, _golden_1280x960())
    assert fitted.sizes.sizes == [(256, 320)]
    assert len(ious) >= 20  # a fair number of confident detections (28 here), both ways
    assert min(ious) >= 0.9 and float(np.mean(ious)) >= 0.97, ious


def test_auto_gives_ultralytics_own_rect_predictor_s_boxes() -> None:
    """ultralytics' predictor with its rect letterbox (committed: scripts/make_golden.py --rect) on the golden
    640x480 frames (256x320 here) and their 640x360 crops (192x320): the same boxes, IoU >= 0.99."""
    from tests.prefilter.test_golden import assert_same_detections

    golden = json.loads((GOLDEN / "predictions_rect.json").read_text())
    assert golden["model"] == DEFAULT_MODEL.name and golden["rect"]
    det = open_prefilter(DEFAULT_MODEL, ModelConfig(path=DEFAULT_MODEL, min_score=golden["conf"], max_batch=1,
                                                    iou_threshold=golden["iou"], max_detections=300))
    assert isinstance(det, YoloDetector)
    ours = {}
    for path in sorted(GOLDEN.glob("*.jpg")):
        image = cv2.imread(str(path))
        for key, frame in ((path.name, image), (f"{path.name}@640x360", image[60:420])):
            ours[key] = [{"class_id": d.class_id, "confidence": d.confidence, "box": list(d.box)}
                         for d in det.infer(frame).detections]
    assert det.sizes is not None and sorted(det.sizes.sizes) == [(192, 320), (256, 320)]
    assert assert_same_detections(ours, golden["predictions"], golden["conf"]) >= 20


def test_openvino_runs_the_rewritten_graph_with_the_same_boxes(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("openvino", reason="needs the openvino extra")
    base = {"path": DEFAULT_PREFILTER, "runtime": "openvino", "max_batch": 1, "min_score": 0.25,
            "engine_cache_dir": tmp_path}
    square = open_prefilter(DEFAULT_PREFILTER, ModelConfig(**base, input_size="square"))
    fitted = open_prefilter(DEFAULT_PREFILTER, ModelConfig(**base, input_size=[256, 320]))
    assert isinstance(square, YoloDetector) and isinstance(fitted, YoloDetector)
    assert (fitted.info.input_h, fitted.info.input_w) == (256, 320)
    ious = _agreement(square, fitted, _golden_1280x960())
    assert ious and min(ious) >= 0.9 and float(np.mean(ious)) >= 0.97, ious
    assert any("-256x320-" in p.name for p in (tmp_path / "openvino").iterdir())  # its own compiled-model cache


def test_an_explicit_size_runs_every_frame_at_it() -> None:
    model = open_prefilter(DEFAULT_PREFILTER, ModelConfig(input_size=[192, 320], max_batch=2))
    assert isinstance(model, YoloDetector) and model.sizes is None and model.max_batch == 2
    assert list(model.session.get_inputs()[0].shape)[2:] == [192, 320]
    assert list(model.session.get_outputs()[0].shape)[1:] == [8, 1260]
    square = open_prefilter(DEFAULT_PREFILTER, ModelConfig(input_size="square", max_batch=1))
    assert isinstance(square, YoloDetector)
    wide = [cv2.imread(str(p))[60:420] for p in sorted(GOLDEN.glob("*.jpg"))]  # 640x360: 16:9 frames
    ious = _agreement(square, model, wide)
    assert len(ious) >= 10 and float(np.median(ious)) >= 0.95, ious  # the same parts found at 192x320


@pytest.mark.parametrize(("value", "message"), [
    ([250, 320], "height 250 is not a multiple of 32"),
    ([256, 0], "width 0 is out of range"),
    ([16, 16], "height 16 is out of range"),
    ([256], "got [256]"),
    ("rect", "got 'rect'"),
    ([256.5, 320], "height 256.5 is not a whole number"),
])
def test_a_bad_input_size_is_a_config_error_naming_the_field(value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelConfig(input_size=value)
    text = str(caught.value)
    assert "input_size" in text and message in text and "multiple of 32" in text


def test_runtimes_and_models_that_cannot_take_another_size_refuse_it(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ModelError, match=r"input_size \[256, 320\].*native TensorRT runtime"):
        open_prefilter(DEFAULT_PREFILTER, ModelConfig(runtime="tensorrt", input_size=[256, 320]))
    with pytest.raises(ModelError, match=r"input_size \[256, 320\].*classify model, whose input is its own"):
        open_prefilter(CLASSIFIER, ModelConfig(path=CLASSIFIER, input_size=[256, 320]))
    with pytest.raises(InputSizeError, match="no anchor points"):
        resize_detector_input(onnx.load(str(CLASSIFIER)), 256, 320)
    auto = open_prefilter(CLASSIFIER, ModelConfig(path=CLASSIFIER))  # auto leaves a classifier as it is
    assert auto.info.task == "classify"


def test_an_openvino_ir_refuses_another_size(tmp_path: pathlib.Path) -> None:
    ov = pytest.importorskip("openvino", reason="needs the openvino extra")
    ir = tmp_path / "detector.xml"
    ov.save_model(ov.Core().read_model(str(DEFAULT_PREFILTER)), str(ir))
    with pytest.raises(ModelError, match=r"is an OpenVINO IR.*needs the ONNX file"):
        open_prefilter(ir, ModelConfig(path=ir, runtime="openvino", input_size=[256, 320],
                                       engine_cache_dir=tmp_path))
    auto = open_prefilter(ir, ModelConfig(path=ir, runtime="openvino", engine_cache_dir=tmp_path))
    assert isinstance(auto, YoloDetector) and auto.sizes is None  # auto: an IR runs at its own size


def test_a_graph_whose_anchor_constants_are_not_yolov8s_is_refused() -> None:
    model = onnx.load(str(DEFAULT_MODEL))
    anchors = next(t for t in model.graph.initializer if list(t.dims) == [1, 2, 2100])
    anchors.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(anchors) * 2, anchors.name))
    with pytest.raises(InputSizeError, match="neither YOLOv8's anchor points nor its strides"):
        resize_detector_input(model, 256, 320)
    with pytest.raises(InputSizeError, match="positive multiple of 32"):
        resize_detector_input(onnx.load(str(DEFAULT_MODEL)), 250, 320)


class _Session:
    def __init__(self, anchors: int) -> None:
        self.anchors = anchors

    def get_outputs(self) -> list[Any]:
        return [type("Spec", (), {"shape": [1, 8, self.anchors]})()]


def test_auto_opens_a_handful_of_sizes_then_runs_new_ones_square(caplog: pytest.LogCaptureFixture) -> None:
    from agent.prefilter.yolo_decode import expected_anchor_count

    opened: list[tuple[int, int]] = []

    def opener(size: tuple[int, int]) -> _Session:
        opened.append(size)
        if size == (32, 320):
            raise ModelError("cannot")
        return _Session(expected_anchor_count(size[1], size[0]))

    sizes = SizedSessions(opener, 320, 320, "m.onnx", limit=2, native=_Session(2100))
    caplog.set_level(logging.INFO, logger="agent.prefilter.sized_sessions")
    assert sizes.size_for(1280, 960) == (256, 320)
    assert sizes.size_for(640, 480) == (256, 320)  # the same size: no second session
    assert sizes.size_for(4000, 100) == (320, 320)  # its session fails to open: square, with a warning
    assert sizes.size_for(1920, 1080) == (192, 320)
    assert sizes.size_for(960, 1280) == (320, 320)  # a third size: over the limit, square
    for _ in range(3):
        sizes.size_for(960, 1280)  # decided once: no more sessions, no more log lines
    assert opened == [(256, 320), (32, 320), (192, 320)]
    assert sum("960x1280 run at the model's own size" in r.getMessage() for r in caplog.records) == 1


def test_anchor_constants_behind_a_dequantize_linear_are_rewritten_too() -> None:
    """A Q/DQ export may quantize the head's constants: anchors in steps of 0.5 fit int8 exactly, so the graph
    with them behind a DequantizeLinear must give what the plain one gives, at its own size and at 256x320."""
    from onnx import helper

    quantized = onnx.load(str(DEFAULT_MODEL))
    graph = quantized.graph
    for t in [t for t in graph.initializer if list(t.dims) == [1, 2, 2100]]:
        values = numpy_helper.to_array(t)
        name = t.name
        graph.initializer.remove(t)
        graph.initializer.extend([numpy_helper.from_array((values / 0.5).astype(np.int8), f"{name}/q"),
                                  numpy_helper.from_array(np.array(0.5, np.float32), f"{name}/scale"),
                                  numpy_helper.from_array(np.array(0, np.int8), f"{name}/zero")])
        graph.node.insert(0, helper.make_node("DequantizeLinear", [f"{name}/q", f"{name}/scale", f"{name}/zero"],
                                              [name], name=f"{name}/dq"))
    assert sum(n.op_type == "DequantizeLinear" for n in graph.node) == 2
    x = np.random.default_rng(8).random((1, 3, 256, 320), dtype=np.float32)
    plain = onnx.load(str(DEFAULT_MODEL))
    resize_detector_input(plain, 256, 320)
    resize_detector_input(quantized, 256, 320)
    assert not any(n.op_type == "DequantizeLinear" for n in quantized.graph.node)  # now plain new anchors
    assert np.array_equal(_run(quantized, x), _run(plain, x))
