"""The YOLOv8 ONNX detector: pre-process, forward, post-process.

``YoloDetector.from_file`` does the I/O (reads the file, opens the session, checks
the layout); ``__init__`` takes a ready session, so tests can pass a fake one.
Not thread-safe: one inference thread owns a detector (its input buffers are
preallocated and reused for every frame).
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Sequence

import numpy as np

from agent.config.models import ModelConfig
from agent.errors import ModelError
from agent.prefilter.detection import Detection, PrefilterResult
from agent.prefilter.letterbox import (
    Letterbox,
    boxes_to_source,
    letterbox_into,
    plan_letterbox,
    to_nchw_float,
)
from agent.prefilter.model_info import (
    ModelInfo,
    check_detector_layout,
    file_digest,
    load_metadata,
)
from agent.prefilter.onnx_session import InferenceSessionLike, open_session
from agent.prefilter.yolo_decode import decode_yolov8


class YoloDetector:
    def __init__(
        self,
        session: InferenceSessionLike,
        info: ModelInfo,
        *,
        min_score: float = 0.05,
        iou_threshold: float = 0.7,
        max_detections: int = 100,
        max_batch: int = 1,
    ) -> None:
        self.session = session
        self.info = info
        self.min_score = min_score
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self._canvas = np.full((info.input_h, info.input_w, 3), 114, np.uint8)
        batch_dim = list(session.get_inputs()[0].shape)[0]
        # a model whose batch dimension is free (see onnx_session.open_session) takes several frames a call
        self.max_batch = max(1, max_batch) if not isinstance(batch_dim, int) else 1
        self._tensor = np.zeros((self.max_batch, 3, info.input_h, info.input_w), np.float32)
        self._plans: dict[tuple[int, int], Letterbox] = {}

    @classmethod
    def from_file(cls, path: pathlib.Path, config: ModelConfig | None = None) -> YoloDetector:
        config = config or ModelConfig(path=path)
        path = pathlib.Path(path)
        session, meta = open_session(path, config.providers, config.intra_op_threads, config.max_batch)
        info = describe_model(path, session, meta)
        return cls(session, info, min_score=config.min_score, iou_threshold=config.iou_threshold,
                   max_detections=config.max_detections, max_batch=config.max_batch)

    def preprocess(self, image: np.ndarray, slot: int = 0) -> tuple[np.ndarray, Letterbox]:
        """Letterbox ``image`` into slot ``slot`` of the reused input tensor; returns (that slot as a
        batch of one, plan)."""
        h, w = image.shape[:2]
        plan = self._plans.get((w, h))
        if plan is None:
            plan = plan_letterbox(w, h, self.info.input_w, self.info.input_h)
            self._plans[(w, h)] = plan
        letterbox_into(image, plan, self._canvas)
        to_nchw_float(self._canvas, self._tensor[slot])
        return self._tensor[slot:slot + 1], plan

    def forward(self, tensor: np.ndarray) -> np.ndarray:
        outputs = self.session.run([self.info.output_name], {self.info.input_name: tensor})
        return np.asarray(outputs[0])

    def postprocess(self, output: np.ndarray, plan: Letterbox) -> tuple[Detection, ...]:
        raw = decode_yolov8(output[0], len(self.info.names), min_score=self.min_score,
                            iou_threshold=self.iou_threshold, max_detections=self.max_detections)
        boxes = boxes_to_source(raw.boxes, plan)
        names = self.info.names
        return tuple(
            Detection(label=names[int(c)], class_id=int(c), confidence=float(s),
                      box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])))
            for b, s, c in zip(boxes, raw.scores, raw.class_ids, strict=True)
        )

    def infer(self, image: np.ndarray) -> PrefilterResult:
        t0 = time.perf_counter()
        tensor, plan = self.preprocess(image)
        output = self.forward(tensor)
        detections = self.postprocess(output, plan)
        return PrefilterResult(self.info.model_id, detections, (time.perf_counter() - t0) * 1000.0)

    def infer_batch(self, images: Sequence[np.ndarray]) -> list[PrefilterResult]:
        """Several frames (from different cameras) in one session run, ``max_batch`` at a time; each
        result's latency is its batch's (the time the frame waited for its answer)."""
        results: list[PrefilterResult] = []
        for start in range(0, len(images), self.max_batch):
            chunk = images[start:start + self.max_batch]
            if len(chunk) == 1:
                results.append(self.infer(chunk[0]))
                continue
            t0 = time.perf_counter()
            plans = [self.preprocess(image, slot)[1] for slot, image in enumerate(chunk)]
            output = self.forward(self._tensor[:len(chunk)])
            detections = [self.postprocess(output[i:i + 1], plan) for i, plan in enumerate(plans)]
            ms = (time.perf_counter() - t0) * 1000.0
            results += [PrefilterResult(self.info.model_id, d, ms) for d in detections]
        return results

    def detect(self, image: np.ndarray) -> PrefilterResult:
        """The same as :meth:`infer` (the name every prefilter shares)."""
        return self.infer(image)


def describe_model(path: pathlib.Path, session: InferenceSessionLike, meta: dict[str, str]) -> ModelInfo:
    """Work out and check what the model is, from ONNX metadata or a sidecar."""
    where = f"model {path}"
    parsed, source = load_metadata(path, meta)
    task = parsed["task"]
    if task != "detect":
        raise ModelError(f"{where}: task is {task!r}; YoloDetector runs task 'detect' (YOLOv8 output layout); "
                         "open any prefilter model with agent.prefilter.open_prefilter")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{where}: expected 1 input and 1 output (YOLOv8 export without NMS), got "
                         f"{len(inputs)} inputs and {len(outputs)} outputs")
    names: tuple[str, ...] = parsed["names"]
    w, h = check_detector_layout(where, names, list(inputs[0].shape), list(outputs[0].shape), parsed.get("imgsz"))
    return ModelInfo(
        model_id=f"{path.stem}@{file_digest(path)[:12]}", path=path, task=task, names=names,
        input_w=w, input_h=h, input_name=inputs[0].name, output_name=outputs[0].name, metadata_source=source,
    )
