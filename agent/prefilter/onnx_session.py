"""The model runtime boundary: building an ONNX Runtime session.

Everything onnxruntime raises while loading is translated into ModelError with
the file named; the detector itself only sees the small ``InferenceSessionLike``
interface, so tests can hand it a fake session.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from agent.config.providers import TENSORRT
from agent.errors import ModelError
from agent.prefilter.providers import (
    BatchShapes,
    Precision,
    choose_providers,
    engine_cache_root,
    ensure_writable_dir,
    provider_entries,
    resolve_precision,
    tensorrt_ep_options,
    tensorrt_quantization_problem,
)

__all__ = ["GpuSettings", "InferenceSessionLike", "IOSpec", "choose_providers", "open_session"]

log = logging.getLogger(__name__)


class IOSpec(Protocol):
    name: str
    shape: list[Any]


class InferenceSessionLike(Protocol):
    def get_inputs(self) -> Sequence[IOSpec]: ...
    def get_outputs(self) -> Sequence[IOSpec]: ...
    def run(self, output_names: list[str] | None, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class GpuSettings:
    """What the GPU providers need besides their names (``model.precision``, ``model.engine_cache_dir``,
    ``model.gpu_device``)."""

    precision: str = "auto"
    cache_dir: pathlib.Path | None = None  # None: engine_cache_root's default
    device_id: int = 0


def open_session(
    path: pathlib.Path, providers: Sequence[str], intra_op_threads: int, max_batch: int = 1,
    gpu: GpuSettings | None = None, input_size: tuple[int, int] | None = None,
) -> tuple[Any, dict[str, str]]:
    """Create an onnxruntime session and return it with the model's custom metadata.

    With ``max_batch`` > 1 a model exported for a batch of 1 is given a free batch dimension
    (``graph_rewrite.dynamic_batch``) when a check shows that a batch of two copies gives two copies
    of the single output; the session's input then has a non-numeric batch dimension. Otherwise
    (the check fails, the graph cannot be rewritten) the model runs one frame per call, as exported.

    ``providers`` are ONNX Runtime names (or ``["auto"]``, see agent.prefilter.providers); the ones this build
    lacks are skipped with a warning. The TensorRT provider gets ``gpu``'s precision and an engine + timing
    cache directory keyed by the model file.

    ``input_size`` (height, width) gives a YOLOv8 detector that input size (``agent.prefilter.input_size``);
    ModelError when its graph cannot be rewritten so."""
    import onnxruntime as ort

    if not path.exists():
        raise ModelError(f"model file {path} does not exist; expected an ONNX file "
                         "(the shipped demo model is models/conveyor-yolov8n.int8.onnx)")
    if not path.is_file():
        raise ModelError(f"model path {path} is not a file; expected an ONNX file")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # On a shared edge box, spinning threads steal the cores that decode video.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    chosen = choose_providers(providers, ort.get_available_providers())
    plan = _ProviderPlan(path, chosen, gpu or GpuSettings())
    entries = plan.entries(1, ort.__version__)
    model: str | bytes = str(path)
    faster = _rewritten(path, batched=False, input_size=input_size)
    if faster is not None:
        model = faster
    if max_batch > 1:
        batched = _rewritten(path, batched=True, input_size=input_size)
        if batched is not None:
            batched_entries = plan.entries(max_batch, ort.__version__)
            try:
                session = ort.InferenceSession(batched, sess_options=opts, providers=batched_entries)
            except Exception:  # noqa: BLE001 - the rewrite did not give a valid graph: run as exported
                log.info("model %s: batching rewrite not loadable; one frame per call", path.name)
            else:
                if batch_agrees(session):
                    return session, dict(session.get_modelmeta().custom_metadata_map)
                log.info("model %s: a batch does not give per-frame outputs; one frame per call", path.name)
    try:
        session = ort.InferenceSession(model, sess_options=opts, providers=entries)
    except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidProtobuf errors
        raise ModelError(f"model file {path} could not be loaded by onnxruntime: "
                         f"{str(exc).strip().splitlines()[0][:300]}; expected a valid ONNX model") from exc
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return session, meta


class _ProviderPlan:
    """The session's providers, and for the TensorRT one what its options are made of (read once per load)."""

    def __init__(self, path: pathlib.Path, chosen: list[str], gpu: GpuSettings) -> None:
        self.path, self.chosen, self.gpu = path, chosen, gpu
        self.precision: Precision | None = None
        self.proto: Any = None
        if TENSORRT not in chosen:
            return
        import onnx

        from agent.prefilter.gate_record import graph_precision

        try:
            self.proto = onnx.load(str(path), load_external_data=False)
        except Exception:  # noqa: BLE001 - not readable as ONNX: onnxruntime reports it with its own message
            return
        graph = graph_precision(self.proto)
        problem = tensorrt_quantization_problem(self.proto) if graph == "int8" else None
        if problem is not None:
            rest = [p for p in chosen if p != TENSORRT]
            if not rest:
                raise ModelError(f"model {path} cannot run on TensorRT: {problem}; quantize the FP32 model with "
                                 "`edge-agent models quantize MODEL --calib FRAMES --flavour tensorrt`, or add "
                                 "cuda/cpu to model.providers")
            log.warning("model %s: TensorRT provider skipped (%s); using %s", path.name, problem, rest)
            self.chosen = rest
            return
        self.precision = resolve_precision(gpu.precision, graph, f"model {path}")

    def entries(self, max_batch: int, ort_version: str) -> list[Any]:
        """``providers=`` for a session taking up to ``max_batch`` frames a call."""
        if TENSORRT not in self.chosen:
            return provider_entries(self.chosen, None, self.gpu.device_id)
        if self.precision is None:  # the file is not readable as ONNX: onnxruntime says so when it loads it
            return list(self.chosen)
        from agent.prefilter.model_info import file_digest

        shapes = _batch_shapes(self.proto, max_batch)
        root = engine_cache_root(self.gpu.cache_dir, os.environ)
        # The provider's own engine key does not see new weights under the same graph: one folder per model file.
        folder = root / "onnxruntime-trt" / (f"{self.path.stem}-{file_digest(self.path)[:12]}-{self.precision.name}"
                                             f"-b{shapes.max_batch if shapes else 1}-ort{ort_version}")
        ensure_writable_dir(folder, "TensorRT engine cache directory")
        log.info("model %s: TensorRT provider, %s, engine and timing cache in %s", self.path.name,
                 self.precision.name, folder)
        options = tensorrt_ep_options(self.precision, folder, self.gpu.device_id, shapes)
        return provider_entries(self.chosen, options, self.gpu.device_id)


def _batch_shapes(proto: Any, max_batch: int) -> BatchShapes | None:
    """The profile for a batched session (``max_batch`` > 1 and an image input CxHxW of known size), else None."""
    if max_batch <= 1 or not proto.graph.input:
        return None
    first = proto.graph.input[0]
    dims = first.type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:]):
        return None
    c, h, w = (int(d.dim_value) for d in dims[1:])
    return BatchShapes(first.name, (c, h, w), 1, max_batch, max_batch)


def _rewritten(path: pathlib.Path, batched: bool, input_size: tuple[int, int] | None = None) -> bytes | None:
    """The model with agent.prefilter.graph_rewrite's rewrites (and a free batch dimension when
    ``batched``), or None when none applies (or the file is not one onnx can read: then onnxruntime
    reports it, with its own message). With ``input_size`` never None unbatched (ModelError when the
    graph cannot take that size)."""
    import onnx

    from agent.prefilter.graph_rewrite import dynamic_batch, fuse_dfl_softmax
    from agent.prefilter.input_size import load_resized

    if input_size is not None:
        proto = load_resized(path, input_size)
        fuse_dfl_softmax(proto)
        if batched and not dynamic_batch(proto):
            return None
        return bytes(proto.SerializeToString())
    try:
        proto = onnx.load(str(path))
        count = fuse_dfl_softmax(proto)
        if batched and not dynamic_batch(proto):
            return None
    except Exception:  # noqa: BLE001 - any failure here only means: load the file as it is
        return None
    if not count and not batched:
        return None
    log.debug("model %s: box decode softmax moved to the last axis (%d place(s)), batch %s", path.name, count,
              "free" if batched else "as exported")
    return bytes(proto.SerializeToString())


def batch_agrees(session: Any) -> bool:
    """Two different inputs in one batch give what each gives alone (same shapes, same numbers)."""
    inp = session.get_inputs()[0]
    shape = list(inp.shape)
    if len(shape) < 2 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        return False
    rng = np.random.default_rng(0)
    x = rng.random((2, *shape[1:]), dtype=np.float32)
    try:
        together = session.run(None, {inp.name: x})
        alone = [session.run(None, {inp.name: x[i:i + 1]}) for i in range(2)]
    except Exception:  # noqa: BLE001 - a graph that fails on a batch of two is not batchable
        return False
    for k, out in enumerate(together):
        out = np.asarray(out)
        expect = np.concatenate([np.asarray(a[k]) for a in alone])
        if out.shape != expect.shape or not np.allclose(out, expect, rtol=1e-4, atol=1e-3):
            return False
    return True
