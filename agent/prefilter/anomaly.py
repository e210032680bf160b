"""The ONNX anomaly model (task ``anomaly``): trained on good frames only, it says how unlike them a frame is.

The graph has one image input (batch, 3, H, W), prepared as a classifier's is (metadata ``resize``,
``interpolation``, ``mean``, ``std``; :mod:`agent.prefilter.classify_input`), and two outputs:

    anomaly_map   (batch, 1, h, w), values in 0..1, h and w a fraction of the input (1/4 for ours)
    score         (batch,), the frame's score in 0..1 (ours: the largest 3x3 average of the map)

The metadata key ``threshold`` (0 < t < 1) is the score above which a frame is anomalous, chosen when the model
was trained (at a stated false-reject rate of held-out good frames). The agent maps a score ``s`` to a
confidence that is 0.5 at the threshold, linear on each side (:func:`anomaly_confidence`); the map's cells over
the threshold, joined into connected regions (:func:`anomaly_regions`), become ``anomaly`` detections with
boxes in frame pixels, each with the confidence of its highest cell.

Same shape as :class:`~agent.prefilter.classifier.ImageClassifier`: ``__init__`` takes a ready session,
``preprocess`` / ``forward`` / ``postprocess`` are separate, and ``infer`` gives a ``PrefilterResult`` of task
``anomaly``. Not thread-safe: one inference thread owns it.
"""

from __future__ import annotations

import pathlib
import time

import cv2
import numpy as np

from agent.core.detections import Detection, PrefilterResult
from agent.errors import ModelError, ModelLayoutError
from agent.prefilter.classify_input import InputFitter, InputPlan
from agent.prefilter.model_info import ModelInfo, check_anomaly_layout, classifier_input, file_digest, load_metadata
from agent.prefilter.onnx_session import InferenceSessionLike

ANOMALY_LABEL = "anomaly"
MAX_REGIONS = 16  # the most anomaly regions one frame reports (largest confidence first)


def anomaly_confidence(score: float, threshold: float) -> float:
    """``score`` (0..1) -> confidence (0..1): 0 -> 0, ``threshold`` -> 0.5, 1 -> 1, linear in between."""
    s = min(max(float(score), 0.0), 1.0)
    if s <= threshold:
        return 0.5 * s / threshold
    return 0.5 + 0.5 * (s - threshold) / (1.0 - threshold)


def _to_frame(x: float, y: float, plan: InputPlan) -> tuple[float, float]:
    """A point in model-input pixels -> frame pixels, through the plan's window and crop."""
    wx, wy, ww, wh = plan.window
    cx, cy, cw, ch = plan.crop
    fx = (x - wx) * cw / ww + cx
    fy = (y - wy) * ch / wh + cy
    return min(max(fx, 0.0), float(plan.src_w)), min(max(fy, 0.0), float(plan.src_h))


def anomaly_regions(amap: np.ndarray, threshold: float, plan: InputPlan,
                    max_regions: int = MAX_REGIONS) -> tuple[Detection, ...]:
    """Connected regions (8-connected) of the map's cells >= ``threshold`` -> ``anomaly`` detections with
    boxes in frame pixels, best first. ``amap`` is (h, w) float; the model input is plan.dst_w x plan.dst_h."""
    if amap.ndim != 2:
        raise ValueError(f"expected an anomaly map of shape (h, w), got {amap.shape}")
    mask = (amap >= threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return ()
    sx, sy = plan.dst_w / amap.shape[1], plan.dst_h / amap.shape[0]
    peaks = np.zeros(count, np.float64)
    np.maximum.at(peaks, labels.ravel().astype(np.intp), amap.ravel().astype(np.float64))
    found = []
    for i in range(1, count):
        x, y, w, h = (int(v) for v in stats[i, :4])
        x1, y1 = _to_frame(x * sx, y * sy, plan)
        x2, y2 = _to_frame((x + w) * sx, (y + h) * sy, plan)
        if x2 > x1 and y2 > y1:
            found.append(Detection(ANOMALY_LABEL, 0, anomaly_confidence(peaks[i], threshold), (x1, y1, x2, y2)))
    found.sort(key=lambda d: -d.confidence)
    return tuple(found[:max_regions])


class AnomalyModel:
    def __init__(self, session: InferenceSessionLike, info: ModelInfo) -> None:
        if info.classifier_input is None or info.anomaly_threshold is None:
            raise ModelError(f"model {info.path}: no input description or threshold; build the ModelInfo with "
                             "describe_anomaly()")
        self.session = session
        self.info = info
        self.input = info.classifier_input
        self.threshold = info.anomaly_threshold
        self._fitter = InputFitter(info.input_w, info.input_h, self.input.resize, self.input.interpolation,
                                   self.input.normalisation)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, InputPlan]:
        """Fit ``image`` (BGR HxWx3 uint8) into the reused input tensor; returns (tensor, plan)."""
        return self._fitter.fit(image)

    def forward(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(anomaly map (1, 1, h, w), score (1,)) for one prepared frame."""
        amap, score = self.session.run([self.info.output_name, self.info.score_output],
                                       {self.info.input_name: tensor})
        return np.asarray(amap), np.asarray(score)

    def postprocess(self, amap: np.ndarray, score: np.ndarray, plan: InputPlan) -> tuple[float, tuple[Detection, ...]]:
        """One frame's outputs -> (anomaly confidence, regions)."""
        if amap.ndim != 4 or amap.shape[:2] != (1, 1) or score.shape not in ((1,), (1, 1)):
            raise ModelLayoutError(f"model {self.info.path}: expected outputs anomaly_map (1, 1, h, w) and score "
                                   f"(1,), got {amap.shape} and {score.shape}")
        value = float(score.reshape(-1)[0])
        if not np.isfinite(value) or not np.all(np.isfinite(amap)):
            raise ModelLayoutError(f"model {self.info.path}: non-finite anomaly output (score {value})")
        return anomaly_confidence(value, self.threshold), anomaly_regions(amap[0, 0], self.threshold, plan)

    def infer(self, image: np.ndarray) -> PrefilterResult:
        t0 = time.perf_counter()
        tensor, plan = self.preprocess(image)
        confidence, regions = self.postprocess(*self.forward(tensor), plan)
        return PrefilterResult(self.info.model_id, regions, (time.perf_counter() - t0) * 1000.0, task="anomaly",
                               anomaly=confidence)


def describe_anomaly(path: pathlib.Path, session: InferenceSessionLike, meta: dict[str, str]) -> ModelInfo:
    """Work out and check what the anomaly model is, from its ONNX metadata (or a sidecar)."""
    where = f"model {path}"
    parsed, source = load_metadata(path, meta)
    if parsed["task"] != "anomaly":
        raise ModelError(f"{where}: task is {parsed['task']!r}; AnomalyModel runs task 'anomaly' "
                         "(open any prefilter model with agent.prefilter.open_prefilter)")
    if "threshold" not in parsed:
        raise ModelError(f"{where}: an anomaly model needs metadata key 'threshold' (its score threshold, 0 < t < 1, "
                         "chosen at training from the good frames' scores); `edge-agent models train --task anomaly` "
                         "writes it")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    w, h, map_name, score_name = check_anomaly_layout(where, inputs, outputs, parsed.get("imgsz"))
    return ModelInfo(
        model_id=f"{path.stem}@{file_digest(path)[:12]}", path=path, task="anomaly", names=(ANOMALY_LABEL,),
        input_w=w, input_h=h, input_name=inputs[0].name, output_name=map_name, metadata_source=source,
        classifier_input=classifier_input(parsed), anomaly_threshold=parsed["threshold"], score_output=score_name)
