"""Open any prefilter model: the task in its metadata (or sidecar) picks the runtime.

``task`` "detect" gives a ``YoloDetector``, "classify" an ``ImageClassifier``, "anomaly" an
``AnomalyModel`` (agent.prefilter.anomaly). All have the same surface: ``info`` (a ``ModelInfo``),
``preprocess(image) -> (tensor, plan)`` into a reused input tensor, ``forward(tensor)``, and
``infer(image) -> PrefilterResult``. The session is opened once and handed to
the runtime the task names.

``model.runtime`` picks what runs the graph: ``onnxruntime`` (``model.providers``,
TensorRT/CUDA/CPU execution providers), ``openvino`` (OpenVINO on the CPU, ONNX or IR;
see agent.prefilter.openvino_session), ``tensorrt`` (a native TensorRT engine, built
from the ONNX file and cached; see agent.prefilter.tensorrt) or ``auto`` (the fastest
installed CPU runtime by a cached probe; agent.prefilter.runtime_choice). Every way the
detector and classifier (and any task below them) only see the small session interface.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any, TypeAlias

from agent.config.models import ModelConfig
from agent.config.providers import CPU
from agent.prefilter.anomaly import AnomalyModel, describe_anomaly
from agent.prefilter.classifier import ImageClassifier, describe_classifier
from agent.prefilter.detector import YoloDetector, describe_model
from agent.prefilter.model_info import load_metadata
from agent.prefilter.onnx_session import GpuSettings, open_session

log = logging.getLogger(__name__)

PrefilterModel: TypeAlias = YoloDetector | ImageClassifier | AnomalyModel


def open_prefilter(path: pathlib.Path, config: ModelConfig | None = None) -> PrefilterModel:
    """Load ``path`` as the detector or the classifier its metadata says it is; ModelError
    (naming the file and what was expected) when it is neither or is malformed."""
    path = pathlib.Path(path)
    config = config or ModelConfig(path=path)
    if config.runtime == "auto":
        from agent.prefilter.runtime_choice import choose_runtime

        model, _choice = choose_runtime(path, config, open_prefilter)
        return model  # type: ignore[no-any-return]
    if config.runtime == "tensorrt":
        from agent.prefilter.tensorrt.engine import open_tensorrt_session

        session, meta = open_tensorrt_session(path, config)
        return _wrap(path, session, meta, config)
    if config.runtime == "openvino":
        return _open_openvino(path, config)
    gpu = GpuSettings(precision=config.precision, cache_dir=config.engine_cache_dir, device_id=config.gpu_device)
    cpu_only = list(config.providers) == [CPU]
    # The first session only tells the task and layout: on the CPU, so a GPU provider builds its engine once.
    session, meta = open_session(path, config.providers if cpu_only else [CPU], config.intra_op_threads)
    parsed, _source = load_metadata(path, meta)
    if parsed["task"] in ("classify", "anomaly"):
        describe = describe_classifier if parsed["task"] == "classify" else describe_anomaly
        describe(path, session, meta)  # a bad layout is refused before a GPU session is built
        if not cpu_only:
            session, meta = open_session(path, config.providers, config.intra_op_threads, gpu=gpu)
        return _wrap(path, session, meta, config)
    describe_model(path, session, meta)  # a bad layout is refused before anything else is tried
    if config.max_batch > 1 or not cpu_only:  # opened again: a free batch dimension where the graph allows it
        session, meta = open_session(path, config.providers, config.intra_op_threads, config.max_batch, gpu=gpu)
    return _wrap(path, session, meta, config)


def _open_openvino(path: pathlib.Path, config: ModelConfig) -> PrefilterModel:
    from agent.prefilter.openvino_session import open_openvino_session, read_openvino_model

    _ov, _model, meta = read_openvino_model(path)
    parsed, _source = load_metadata(path, meta)  # the task decides whether a free batch dimension is tried
    session, meta = open_openvino_session(path, config, parsed["task"])
    return _wrap(path, session, meta, config)


def _wrap(path: pathlib.Path, session: Any, meta: dict[str, str], config: ModelConfig) -> PrefilterModel:
    parsed, _source = load_metadata(path, meta)
    if parsed["task"] == "anomaly":
        return AnomalyModel(session, describe_anomaly(path, session, meta))
    if parsed["task"] == "classify":
        classifier = ImageClassifier(session, describe_classifier(path, session, meta))
        classifier.self_check()
        return classifier
    runs = config.concurrent_runs
    if config.runtime == "tensorrt" and runs > 1:  # one execution context, one set of device buffers
        log.info("model.concurrent_runs %d: the native TensorRT runtime runs one frame batch at a time", runs)
        runs = 1
    return YoloDetector(session, describe_model(path, session, meta), min_score=config.min_score,
                        iou_threshold=config.iou_threshold, max_detections=config.max_detections,
                        max_batch=config.max_batch, concurrent_runs=runs)
