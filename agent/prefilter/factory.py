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
from collections.abc import Callable
from typing import Any, TypeAlias

from agent.config.models import ModelConfig
from agent.config.providers import AUTO, CPU, TENSORRT
from agent.errors import ModelError
from agent.prefilter.anomaly import AnomalyModel, describe_anomaly
from agent.prefilter.classifier import ImageClassifier, describe_classifier
from agent.prefilter.detector import YoloDetector, describe_model
from agent.prefilter.model_info import load_metadata
from agent.prefilter.onnx_session import GpuSettings, open_session
from agent.prefilter.sized_sessions import SizedSessions

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
        _refuse_input_size(path, config, "the native TensorRT runtime builds its engine for the exported size")
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
        _refuse_input_size(path, config, f"it is a {parsed['task']} model, whose input is its own")
        if not cpu_only:
            session, meta = open_session(path, config.providers, config.intra_op_threads, gpu=gpu)
        return _wrap(path, session, meta, config)
    describe_model(path, session, meta)  # a bad layout is refused before anything else is tried
    tensorrt = TENSORRT in config.providers or (AUTO in config.providers and _has_tensorrt_provider())
    if tensorrt:
        _refuse_input_size(path, config, "the TensorRT provider builds its engine for the exported size")
    size = config.input_size if isinstance(config.input_size, tuple) else None
    if config.max_batch > 1 or not cpu_only or size is not None:  # again: a free batch dimension, the input size
        session, meta = open_session(path, config.providers, config.intra_op_threads, config.max_batch, gpu=gpu,
                                     input_size=size)

    def opener(fitted: tuple[int, int]) -> Any:
        return open_session(path, config.providers, config.intra_op_threads, config.max_batch, gpu=gpu,
                            input_size=fitted)[0]

    return _wrap(path, session, meta, config, None if tensorrt else opener)


def _has_tensorrt_provider() -> bool:
    import onnxruntime as ort

    return TENSORRT in ort.get_available_providers()


def _refuse_input_size(path: pathlib.Path, config: ModelConfig, why: str) -> None:
    """ModelError for ``model.input_size`` [height, width] where it cannot apply (auto means square there)."""
    if isinstance(config.input_size, tuple):
        h, w = config.input_size
        raise ModelError(f"model.input_size [{h}, {w}] cannot apply to model {path}: {why}; set input_size: auto "
                         "or square (auto runs such a model at its own size)")


def _open_openvino(path: pathlib.Path, config: ModelConfig) -> PrefilterModel:
    from agent.prefilter.openvino_session import IR_SUFFIX, open_openvino_session, read_openvino_model

    _ov, _model, meta = read_openvino_model(path)
    parsed, _source = load_metadata(path, meta)  # the task decides whether a free batch dimension is tried
    task = parsed["task"]
    if task != "detect":
        _refuse_input_size(path, config, f"it is a {task} model, whose input is its own")
    size = config.input_size if isinstance(config.input_size, tuple) else None
    session, meta = open_openvino_session(path, config, task, size)

    def opener(fitted: tuple[int, int]) -> Any:
        return open_openvino_session(path, config, task, fitted)[0]

    return _wrap(path, session, meta, config, opener if path.suffix.lower() != IR_SUFFIX else None)


def _wrap(path: pathlib.Path, session: Any, meta: dict[str, str], config: ModelConfig,
          opener: Callable[[tuple[int, int]], Any] | None = None) -> PrefilterModel:
    """The model for a ready session; ``opener`` opens the detector's session at another input size
    (``model.input_size: auto``), None where the runtime cannot."""
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
    info = describe_model(path, session, meta)
    sizes = None
    if config.input_size == "auto" and opener is not None:
        sizes = SizedSessions(opener, info.input_h, info.input_w, path.name, native=session)
    return YoloDetector(session, info, min_score=config.min_score, iou_threshold=config.iou_threshold,
                        max_detections=config.max_detections, max_batch=config.max_batch, concurrent_runs=runs,
                        sizes=sizes)
