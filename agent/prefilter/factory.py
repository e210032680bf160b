"""Open any prefilter model: the task in its metadata (or sidecar) picks the runtime.

``task`` "detect" gives a ``YoloDetector``, "classify" an ``ImageClassifier``.
Both have the same surface: ``info`` (a ``ModelInfo``), ``preprocess(image) ->
(tensor, plan)`` into a reused input tensor, ``forward(tensor)``, and
``infer(image) -> PrefilterResult``. The session is opened once and handed to
the runtime the task names.
"""

from __future__ import annotations

import pathlib
from typing import TypeAlias

from agent.config.models import ModelConfig
from agent.prefilter.classifier import ImageClassifier, describe_classifier
from agent.prefilter.detector import YoloDetector, describe_model
from agent.prefilter.model_info import load_metadata
from agent.prefilter.onnx_session import open_session

PrefilterModel: TypeAlias = YoloDetector | ImageClassifier


def open_prefilter(path: pathlib.Path, config: ModelConfig | None = None) -> PrefilterModel:
    """Load ``path`` as the detector or the classifier its metadata says it is; ModelError
    (naming the file and what was expected) when it is neither or is malformed."""
    path = pathlib.Path(path)
    config = config or ModelConfig(path=path)
    session, meta = open_session(path, config.providers, config.intra_op_threads)
    parsed, _source = load_metadata(path, meta)
    if parsed["task"] == "classify":
        classifier = ImageClassifier(session, describe_classifier(path, session, meta))
        classifier.self_check()
        return classifier
    describe_model(path, session, meta)  # a bad layout is refused before anything else is tried
    if config.max_batch > 1:  # a detector: opened again with a free batch dimension where the graph allows it
        session, meta = open_session(path, config.providers, config.intra_op_threads, config.max_batch)
    return YoloDetector(session, describe_model(path, session, meta), min_score=config.min_score,
                        iou_threshold=config.iou_threshold, max_detections=config.max_detections,
                        max_batch=config.max_batch)
