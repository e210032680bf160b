"""The ONNX image classifier and the prefilter factory, on real (tiny) ONNX models and the shipped one."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from agent.capture.synthetic import render_still
from agent.config.models import ModelConfig
from agent.errors import ModelError, ModelLayoutError
from agent.prefilter.classifier import ImageClassifier
from agent.prefilter.detector import YoloDetector
from agent.prefilter.factory import open_prefilter
from agent.tooling.dataset.synth import CLASSIFY_NAMES, frame_label
from tests.prefilter.onnx_builders import constant_output_model, yolo_output

SHIPPED = pathlib.Path(__file__).resolve().parents[2] / "models" / "conveyor-resnet-cls.int8.onnx"
META = {"task": "classify", "names": "{0: 'pass', 1: 'scratch', 2: 'hole'}", "imgsz": "[24, 32]",
        "resize": "stretch", "interpolation": "area", "mean": "[0.5, 0.5, 0.5]", "std": "[0.25, 0.25, 0.25]"}
PROBS = np.array([[0.1, 0.7, 0.2]], np.float32)


def model(tmp_path: pathlib.Path, output: np.ndarray = PROBS, meta: dict[str, str] | None = None,
          input_shape: tuple[int | str, ...] = (1, 3, 24, 32), name: str = "cls.onnx") -> pathlib.Path:
    return constant_output_model(tmp_path / name, output, input_shape=input_shape,
                                 metadata=META if meta is None else meta)


def test_probabilities_come_back_in_class_order_and_ranked(tmp_path):
    path = model(tmp_path)
    clf = ImageClassifier.from_file(path, ModelConfig(path=path))
    result = clf.infer(np.zeros((480, 640, 3), np.uint8))
    assert result.task == "classify" and result.detections == ()
    assert [n for n, _ in result.probabilities] == ["pass", "scratch", "hole"]
    assert [p for _, p in result.probabilities] == pytest.approx([0.1, 0.7, 0.2])
    assert [n for n, _ in result.ranked] == ["scratch", "hole", "pass"]
    assert result.model_id.startswith("cls@") and result.latency_ms > 0
    assert (clf.info.input_w, clf.info.input_h) == (32, 24) and clf.info.task == "classify"
    prep = clf.info.classifier_input
    assert prep is not None and prep.resize == "stretch" and prep.interpolation == "area"


def test_preprocess_reuses_its_tensor_and_normalises(tmp_path):
    clf = ImageClassifier.from_file(model(tmp_path))
    t1, plan = clf.preprocess(np.zeros((480, 640, 3), np.uint8))
    assert plan.mode == "stretch" and plan.window == (0, 0, 32, 24)
    assert float(t1.min()) == pytest.approx((0.0 - 0.5) / 0.25)  # black -> -2
    t2, _ = clf.preprocess(np.full((48, 64, 3), 255, np.uint8))  # another frame size: its own plan
    assert t1 is t2 and t2.shape == (1, 3, 24, 32) and float(t2.max()) == pytest.approx((1.0 - 0.5) / 0.25)


def test_ultralytics_defaults_without_preprocessing_keys(tmp_path):
    # a yolov8n-cls export says only task/names/imgsz: centre crop, linear, /255, probabilities
    path = model(tmp_path, meta={"task": "classify", "names": "{0: 'pass', 1: 'scratch', 2: 'hole'}",
                                 "imgsz": "[24, 32]"})
    clf = ImageClassifier.from_file(path)
    prep = clf.info.classifier_input
    assert prep is not None and (prep.resize, prep.interpolation, prep.output) == ("center-crop", "linear",
                                                                                   "probabilities")
    tensor, _ = clf.preprocess(np.full((480, 640, 3), 255, np.uint8))
    assert float(tensor.max()) == pytest.approx(1.0)


def test_logits_get_a_softmax(tmp_path):
    # logits [0, ln 3, 0] -> softmax [1/5, 3/5, 1/5]
    path = model(tmp_path, np.array([[0.0, np.log(3.0), 0.0]], np.float32), {**META, "output": "logits"})
    result = ImageClassifier.from_file(path).infer(np.zeros((24, 32, 3), np.uint8))
    assert [p for _, p in result.probabilities] == pytest.approx([0.2, 0.6, 0.2])


def test_sidecar_describes_a_classifier(tmp_path):
    path = model(tmp_path, meta={}, name="plain.onnx")
    (tmp_path / "plain.json").write_text('{"task": "classify", "names": ["ok", "bad", "ugly"], "imgsz": [24, 32], '
                                         '"resize": "letterbox"}')
    clf = open_prefilter(path)
    assert isinstance(clf, ImageClassifier) and clf.info.names == ("ok", "bad", "ugly")
    assert clf.info.metadata_source == "sidecar plain.json"
    assert clf.info.classifier_input is not None and clf.info.classifier_input.resize == "letterbox"


@pytest.mark.parametrize(
    ("output", "meta", "input_shape", "message"),
    [
        # a detector's output under a classify task
        (np.zeros((1, 7, 21), np.float32), META, (1, 3, 24, 32),
         r"expected a classification output of shape \(batch, classes\) = \(1, 3\) for 3 classes \(pass, scratch, "
         r"hole\), got \[1, 7, 21\] — this looks like a detector's output"),
        # 4 outputs, 3 names
        (np.full((1, 4), 0.25, np.float32), META, (1, 3, 24, 32),
         r"the output has 4 class scores, but the metadata names 3 classes \(pass, scratch, hole\)"),
        # logits declared (by omission) as probabilities
        (np.array([[2.0, -1.0, 0.5]], np.float32), META, (1, 3, 24, 32),
         r"its output is not probabilities .* or metadata key output='logits'"),
        # imgsz that contradicts the graph
        (PROBS, {**META, "imgsz": "[32, 32]"}, (1, 3, 24, 32),
         r"metadata imgsz \[32, 32\] \(\[height, width\]\) disagrees with the input shape \[1, 3, 24, 32\]"),
        # a fixed batch of 4
        (np.tile(PROBS, (4, 1)), META, (4, 3, 24, 32), "fixed batch of 4; expected batch 1 or a dynamic batch"),
        # an input that is not an image
        (PROBS, META, (1, 24, 32), r"expected an image input of shape \(batch, 3, height, width\)"),
    ],
)
def test_bad_classifiers_are_refused_with_what_was_expected(tmp_path, output, meta, input_shape, message):
    path = model(tmp_path, output, meta, input_shape)
    with pytest.raises(ModelLayoutError, match=message):
        ImageClassifier.from_file(path)
    with pytest.raises(ModelLayoutError, match=message):
        open_prefilter(path)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({}, "no class names in the ONNX metadata and no sidecar cls.json"),
        ({**META, "task": "segment"}, "task is 'segment'; the prefilter runs 'detect', 'classify', 'anomaly' models"),
        ({**META, "resize": "squash"}, "metadata key 'resize' is 'squash'; expected one of stretch, letterbox"),
        ({**META, "output": "scores"}, "metadata key 'output' is 'scores'; expected one of probabilities, logits"),
        ({**META, "mean": "[0.5, 0.5]"}, r"metadata key 'mean' must be 3 numbers \(R, G, B"),
        ({**META, "std": "[0.2, 0, 0.2]"}, "'std' must be 3 numbers above 0"),
        ({**META, "imgsz": "[24]"}, r"'imgsz' must be \[height, width\]"),
        ({**META, "names": "[]"}, "'names' is empty; expected at least one class name"),
    ],
)
def test_bad_metadata_is_refused(tmp_path, meta, message):
    path = model(tmp_path, meta=meta)
    with pytest.raises(ModelError, match=message):
        open_prefilter(path)


def test_factory_picks_the_runtime_by_task(tmp_path):
    det_meta = {"task": "detect", "names": "{0: 'scratch', 1: 'hole'}", "imgsz": "[32, 32]"}
    det_path = constant_output_model(tmp_path / "det.onnx", yolo_output([], 2, 21), metadata=det_meta)
    assert isinstance(open_prefilter(det_path), YoloDetector)
    assert isinstance(open_prefilter(model(tmp_path)), ImageClassifier)
    with pytest.raises(ModelError, match="task is 'classify'; YoloDetector runs task 'detect'.*open_prefilter"):
        YoloDetector.from_file(model(tmp_path))
    with pytest.raises(ModelError, match="task is 'detect'; ImageClassifier runs task 'classify'"):
        ImageClassifier.from_file(det_path)


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist; expected an ONNX file"):
        open_prefilter(tmp_path / "nope.onnx")


def test_postprocess_checks_the_output_it_gets(tmp_path):
    clf = ImageClassifier.from_file(model(tmp_path))
    with pytest.raises(ModelLayoutError, match=r"expected an output of shape \(1, 3\) for 3 classes, got \(1, 4\)"):
        clf.postprocess(np.zeros((1, 4), np.float32))
    with pytest.raises(ModelLayoutError, match="non-finite"):
        clf.postprocess(np.array([[np.nan, 0.5, 0.5]], np.float32))


# -- the shipped model -----------------------------------------------------------------------------------------


def test_shipped_classifier_metadata():
    clf = open_prefilter(SHIPPED)
    assert isinstance(clf, ImageClassifier)
    assert clf.info.names == CLASSIFY_NAMES and (clf.info.input_w, clf.info.input_h) == (256, 192)
    prep = clf.info.classifier_input
    assert prep is not None and (prep.resize, prep.interpolation, prep.output) == ("stretch", "area", "probabilities")
    assert prep.normalisation.mean == pytest.approx((0.485, 0.456, 0.406))
    # full-width ResNet-18 (narrower ones gained too little from INT8): only the INT8 file is shipped
    assert SHIPPED.name.endswith(".int8.onnx") and SHIPPED.stat().st_size < 12 * 1024 * 1024


def test_shipped_classifier_knows_the_scene():
    clf = open_prefilter(SHIPPED, ModelConfig(path=SHIPPED, intra_op_threads=1))
    rng = np.random.default_rng(12345)  # not a training or validation seed
    right = 0
    frames = 40
    for _ in range(frames):
        image, truth = render_still(rng)
        result = clf.infer(image)
        assert sum(p for _, p in result.probabilities) == pytest.approx(1.0, abs=1e-4)
        right += result.ranked[0][0] == frame_label(truth)
    assert right >= 0.75 * frames, f"{right}/{frames} frames classified right"
