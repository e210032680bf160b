"""Evaluate an anomaly model on a labelled YOLO-layout dataset: an image with no box is good, one with any box
is defective, and its boxes say which map cells are anomalous (pixel AUROC, for models that stretch the frame
into their input). The verdicts after triage are kept for the INT8 gate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import cv2
import numpy as np

from agent.config.models import TriageConfig
from agent.core.detections import PrefilterResult
from agent.errors import DatasetError
from agent.prefilter.anomaly import AnomalyModel
from agent.tooling.evaluation.anomaly import AtThreshold, at_threshold, auroc, box_mask, histogram
from agent.tooling.evaluation.dataset import LabelledImage, YoloDataset
from agent.triage.policy import decide

ProgressFn = Callable[[int, int], None]
PIXEL_SAMPLE = 200_000  # map cells kept for the pixel AUROC (a seeded sample when there are more)


@dataclasses.dataclass(frozen=True)
class AnomalyEvaluation:
    images: int
    defective: int
    scores: tuple[float, ...]  # the model's raw score per image, dataset order
    labels: tuple[int, ...]  # 1 = defective
    image_auroc: float | None
    pixel_auroc: float | None  # None: no boxes, or the model does not stretch the frame into its input
    at_model_threshold: AtThreshold
    verdicts: tuple[str, ...]
    latencies_ms: tuple[float, ...]

    def histogram(self) -> list[str]:
        s, y = np.array(self.scores), np.array(self.labels, bool)
        return histogram(s[~y].tolist(), s[y].tolist())

    def summary(self) -> str:
        at = self.at_model_threshold

        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"
        return (f"{self.images} images ({self.defective} defective): image AUROC {f(self.image_auroc)}, pixel AUROC "
                f"{f(self.pixel_auroc)}; at the model's threshold {at.threshold:.4f}: false-reject rate "
                f"{at.false_reject_rate:.3f}, recall {f(at.recall)}, precision {f(at.precision)}")


def _read(item: LabelledImage) -> tuple[np.ndarray, np.ndarray]:
    image = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"image {item.path}: OpenCV cannot decode it; expected a JPEG, PNG or BMP file")
    h, w = image.shape[:2]
    boxes = item.boxes
    if (w, h) != (item.width, item.height):
        boxes = boxes / np.array([item.width, item.height] * 2) * np.array([w, h, w, h], np.float64)
    return image, boxes


def evaluate_anomaly(model: AnomalyModel, dataset: YoloDataset, band: TriageConfig | None = None,
                     progress: ProgressFn | None = None, seed: int = 0, pixels: bool = True) -> AnomalyEvaluation:
    """Run ``model`` over ``dataset``: image and pixel AUROC, the numbers at the model's threshold, verdicts.
    An image with a class is defective; ``pixels`` False: image labels only (no boxes, no pixel AUROC)."""
    band = band or TriageConfig()
    scores: list[float] = []
    labels: list[int] = []
    verdicts: list[str] = []
    cells: list[np.ndarray] = []
    truth: list[np.ndarray] = []
    stretch = pixels and model.input.resize == "stretch"
    total = len(dataset.images)
    for i, item in enumerate(dataset.images, start=1):
        image, boxes = _read(item)
        tensor, plan = model.preprocess(image)
        amap, score = model.forward(tensor)
        confidence, regions = model.postprocess(amap, score, plan)
        result = PrefilterResult(model.info.model_id, regions, 0.0, task="anomaly", anomaly=confidence)
        verdicts.append(decide(result, band).verdict)
        scores.append(float(score.reshape(-1)[0]))
        labels.append(int(item.classes.shape[0] > 0))
        if stretch:
            h, w = amap.shape[2:]
            cells.append(amap[0, 0].ravel())
            truth.append(box_mask(boxes, image.shape[1], image.shape[0], w, h).ravel())
        if progress is not None:
            progress(i, total)
    return AnomalyEvaluation(
        images=total, defective=sum(labels), scores=tuple(scores), labels=tuple(labels),
        image_auroc=auroc(labels, scores), pixel_auroc=_pixel_auroc(cells, truth, seed),
        at_model_threshold=at_threshold(labels, scores, model.threshold), verdicts=tuple(verdicts),
        latencies_ms=_latencies(model, dataset))


def _latencies(model: AnomalyModel, dataset: YoloDataset, frames: int = 20) -> tuple[float, ...]:
    """Whole-frame latencies (pre- and post-processing included) of the first ``frames`` images."""
    out = []
    for item in dataset.images[:frames]:
        image, _ = _read(item)
        out.append(model.infer(image).latency_ms)
    return tuple(out)


def _pixel_auroc(cells: list[np.ndarray], truth: list[np.ndarray], seed: int) -> float | None:
    if not cells:
        return None
    values, marks = np.concatenate(cells), np.concatenate(truth)
    if not marks.any():
        return None
    if values.size > PIXEL_SAMPLE:
        keep = np.random.default_rng(seed).choice(values.size, PIXEL_SAMPLE, replace=False)
        values, marks = values[keep], marks[keep]
    return auroc(marks, values)
