"""The ONNX image classifier: pre-process, forward, post-process.

Same shape as ``YoloDetector``: ``ImageClassifier.from_file`` does the I/O (reads
the file, opens the session, checks the layout, runs one frame to check the
output); ``__init__`` takes a ready session, so tests can pass a fake one. Not
thread-safe: one inference thread owns a classifier (its input buffers are
preallocated and reused for every frame).

The model is described by its metadata (``agent.prefilter.model_info``): class
names, input size, how to fit the frame into the input (stretch, letterbox,
centre crop), the filter, mean/std, and whether the output is probabilities or
logits. The result has no boxes: ``PrefilterResult.probabilities`` holds every
class's probability.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from agent.config.models import ModelConfig
from agent.core.detections import PrefilterResult
from agent.errors import ModelError, ModelLayoutError
from agent.prefilter.classify_input import InputFitter, InputPlan, softmax
from agent.prefilter.model_info import (
    ModelInfo,
    check_classifier_layout,
    classifier_input,
    file_digest,
    load_metadata,
)
from agent.prefilter.onnx_session import InferenceSessionLike, open_session

_SUM_TOLERANCE = 1e-3  # probabilities from a float32 softmax sum to 1 within this


class ImageClassifier:
    def __init__(self, session: InferenceSessionLike, info: ModelInfo) -> None:
        if info.classifier_input is None:
            raise ModelError(f"model {info.path}: no classifier input description; build the ModelInfo with "
                             "describe_classifier()")
        self.session = session
        self.info = info
        self.input = info.classifier_input
        self._fitter = InputFitter(info.input_w, info.input_h, self.input.resize, self.input.interpolation,
                                   self.input.normalisation)

    @classmethod
    def from_file(cls, path: pathlib.Path, config: ModelConfig | None = None) -> ImageClassifier:
        config = config or ModelConfig(path=path)
        path = pathlib.Path(path)
        session, meta = open_session(path, config.providers, config.intra_op_threads)
        classifier = cls(session, describe_classifier(path, session, meta))
        classifier.self_check()
        return classifier

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, InputPlan]:
        """Fit ``image`` (BGR HxWx3 uint8) into the reused input tensor; returns (tensor, plan)."""
        return self._fitter.fit(image)

    def forward(self, tensor: np.ndarray) -> np.ndarray:
        outputs = self.session.run([self.info.output_name], {self.info.input_name: tensor})
        return np.asarray(outputs[0])

    def postprocess(self, output: np.ndarray) -> tuple[tuple[str, float], ...]:
        """One image's output (1, nc) -> (name, probability) per class, in class-id order."""
        names = self.info.names
        if output.ndim != 2 or output.shape[0] != 1 or output.shape[1] != len(names):
            raise ModelLayoutError(f"model {self.info.path}: expected an output of shape (1, {len(names)}) for "
                                   f"{len(names)} classes, got {output.shape}")
        scores = output[0].astype(np.float64)
        if not np.all(np.isfinite(scores)):
            raise ModelLayoutError(f"model {self.info.path}: the output has non-finite values {scores.tolist()}")
        probs = softmax(scores) if self.input.output == "logits" else scores
        return tuple((name, float(p)) for name, p in zip(names, probs, strict=True))

    def infer(self, image: np.ndarray) -> PrefilterResult:
        t0 = time.perf_counter()
        tensor, _plan = self.preprocess(image)
        probabilities = self.postprocess(self.forward(tensor))
        return PrefilterResult(self.info.model_id, (), (time.perf_counter() - t0) * 1000.0, task="classify",
                               probabilities=probabilities)

    def self_check(self) -> None:
        """Run one grey frame; a model that says ``output: probabilities`` must give values in 0..1
        summing to 1 (a logits model without ``output: logits`` in its metadata fails here, at load)."""
        probabilities = self.postprocess(self.forward(self.preprocess(
            np.full((self.info.input_h, self.info.input_w, 3), 114, np.uint8))[0]))
        values = np.array([p for _, p in probabilities])
        if self.input.output == "probabilities" and (
                values.min() < -_SUM_TOLERANCE or values.max() > 1 + _SUM_TOLERANCE
                or abs(values.sum() - 1.0) > _SUM_TOLERANCE):
            raise ModelLayoutError(
                f"model {self.info.path}: its output is not probabilities (on a grey frame: values "
                f"{np.round(values, 4).tolist()}, sum {values.sum():.4f}); expected softmax output summing to 1, "
                "or metadata key output='logits' for a model that ends before its softmax")


def describe_classifier(path: pathlib.Path, session: InferenceSessionLike, meta: dict[str, str]) -> ModelInfo:
    """Work out and check what the classifier is, from ONNX metadata or a sidecar."""
    where = f"model {path}"
    parsed, source = load_metadata(path, meta)
    if parsed["task"] != "classify":
        raise ModelError(f"{where}: task is {parsed['task']!r}; ImageClassifier runs task 'classify' "
                         "(open any prefilter model with agent.prefilter.open_prefilter)")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLayoutError(f"{where}: expected 1 input and 1 output (an image classifier), got "
                               f"{len(inputs)} inputs and {len(outputs)} outputs")
    names: tuple[str, ...] = parsed["names"]
    w, h = check_classifier_layout(where, names, list(inputs[0].shape), list(outputs[0].shape), parsed.get("imgsz"))
    return ModelInfo(
        model_id=f"{path.stem}@{file_digest(path)[:12]}", path=path, task="classify", names=names,
        input_w=w, input_h=h, input_name=inputs[0].name, output_name=outputs[0].name, metadata_source=source,
        classifier_input=classifier_input(parsed),
    )
