"""The OpenVINO runtime (``model.runtime: openvino``): the same ONNX files, or an OpenVINO IR (.xml + .bin).

:func:`open_openvino_session` reads the model, compiles it for the CPU and returns an
:class:`OpenVINOSession` with the small surface the detector and classifier use
(``get_inputs``, ``get_outputs``, ``run``, ``get_providers``), so the letterbox and
the decode are the ones ONNX Runtime's path uses. The session holds
``model.concurrent_runs`` infer requests on as many CPU streams: ``run`` takes an idle
request, so up to that many of the loop's model threads run the model at once (the role
``concurrent_runs`` plays for ONNX Runtime, and what OpenVINO's ``AsyncInferQueue``
does, without its callback thread: the loop already has one thread per run).

A detector with ``model.max_batch`` > 1 gets a free batch dimension (the ONNX graph
rewritten by ``graph_rewrite.dynamic_batch``, bounded 1..max_batch) when a check shows a
batch of two gives each frame's own output; else one frame per call, as exported.
Compiled models are cached (OpenVINO's ``CACHE_DIR``) in ``openvino/`` under the engine
cache directory, one folder per model file (name, SHA-256, batch, OpenVINO version), as
the TensorRT plans are. The model's metadata (task, class names) is the ONNX file's,
which OpenVINO keeps in the IR (``rt_info`` "framework"), else the sidecar ``<model>.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import queue
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.config.models import ModelConfig
from agent.errors import ModelError
from agent.prefilter.providers import engine_cache_root, ensure_writable_dir

__all__ = ["INSTALL_HINT", "OpenVINOSession", "load_openvino", "open_openvino_session", "openvino_version"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'edge-agent[openvino]'"
IR_SUFFIX = ".xml"


def load_openvino() -> Any:
    """The ``openvino`` module; ModelError saying what to install when it is missing or does not load."""
    try:
        import openvino
    except ImportError as exc:
        raise ModelError(f"model.runtime openvino needs the openvino Python module, which is not installed ({exc}); "
                         f"install the `openvino` extra: {INSTALL_HINT} (or use model.runtime: onnxruntime)") \
            from None
    except OSError as exc:  # the module is there but its shared libraries do not load
        raise ModelError(f"the openvino module is installed but its libraries do not load ({exc}); reinstall it: "
                         f"{INSTALL_HINT}") from None
    return openvino


def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None when it is not installed (imports nothing else)."""
    from importlib import metadata

    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return None


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list[Any]  # the batch dimension is "batch" when the compiled model takes several frames


class OpenVINOSession:
    """A compiled model and its infer requests behind an ONNX Runtime-like surface. ``run`` may be called from
    up to ``requests`` threads at once; more wait for a free request. Its provider label names the precision
    its float layers run in ("OpenVINO 2026.4.1 CPU (bf16)"), so the warm-up log and ``doctor`` show it."""

    def __init__(self, compiled: Any, requests: int, label: str) -> None:
        self._compiled = compiled
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(max(1, requests)):
            self._idle.put(compiled.create_infer_request())
        self.requests = max(1, requests)
        self.provider_label = label
        # what the float layers run in, as the compiled model says (bf16 | f16 | f32); a Q/DQ graph's are INT8
        self.float_precision = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self._inputs = [_spec(port) for port in compiled.inputs]
        self._outputs = [_spec(port) for port in compiled.outputs]
        self._out_index = {spec.name: i for i, spec in enumerate(self._outputs)}

    def get_inputs(self) -> Sequence[TensorSpec]:
        return list(self._inputs)

    def get_outputs(self) -> Sequence[TensorSpec]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [self.provider_label]

    def run(self, output_names: list[str] | None, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = [s.name for s in self._inputs]
        if sorted(input_feed) != sorted(names):
            raise ModelError(f"OpenVINO model inputs are {names}, got {sorted(input_feed)}")
        wanted = range(len(self._outputs)) if output_names is None else [self._index(n) for n in output_names]
        request = self._idle.get()
        try:
            # share_inputs: no copy of the caller's tensor, which stays untouched until infer returns
            request.infer({name: np.ascontiguousarray(x) for name, x in input_feed.items()}, share_inputs=True)
            return [np.array(request.get_output_tensor(i).data, copy=True) for i in wanted]
        finally:
            self._idle.put(request)

    def _index(self, name: str) -> int:
        if name not in self._out_index:
            raise ModelError(f"OpenVINO model has no output {name!r} (it has {list(self._out_index)})")
        return self._out_index[name]


def precision_name(hint: Any) -> str:
    """An ``INFERENCE_PRECISION_HINT`` value (an ``openvino.Type``, or a string) as its short name: bf16, f16, f32."""
    return str(hint.get_type_name()) if hasattr(hint, "get_type_name") else str(hint)


def _spec(port: Any) -> TensorSpec:
    dims: list[Any] = []
    for i, dim in enumerate(port.get_partial_shape()):
        if dim.is_static:
            dims.append(int(dim.get_length()))
        else:
            dims.append("batch" if i == 0 else "?")
    return TensorSpec(port.get_any_name(), dims)


def read_openvino_model(path: pathlib.Path) -> tuple[Any, Any, dict[str, str]]:
    """(openvino module, ``openvino.Model``, the ONNX metadata it carries); ModelError naming the file when OpenVINO
    cannot read it."""
    ov = load_openvino()
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist or is not a file; expected an ONNX file or an OpenVINO "
                         "IR (.xml with its .bin beside it)")
    if path.suffix.lower() == IR_SUFFIX and not path.with_suffix(".bin").is_file():
        raise ModelError(f"model file {path} is an OpenVINO IR but its weights {path.with_suffix('.bin').name} are "
                         "missing; expected the .xml and the .bin side by side")
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own untyped RuntimeError/GeneralFailure
        first = (str(exc).strip().splitlines() or ["no reason given"])[0][:300]
        raise ModelError(f"model file {path} could not be read by OpenVINO {openvino_version()}: {first}; expected "
                         "an ONNX model or an OpenVINO IR (.xml + .bin)") from None
    return ov, model, _framework_metadata(model)


def _framework_metadata(model: Any) -> dict[str, str]:
    """The ONNX metadata OpenVINO keeps in ``rt_info["framework"]`` (an IR converted from ONNX keeps it too)."""
    try:
        section = model.get_rt_info()["framework"]
    except (KeyError, RuntimeError, TypeError):
        return {}
    out: dict[str, str] = {}
    for key in list(section.keys()):
        value = section[key]
        out[str(key)] = value.astype(str) if hasattr(value, "astype") else str(value)
    return out


def float_precision(ov: Any, config: ModelConfig) -> str:
    """The CPU plugin's ``INFERENCE_PRECISION_HINT`` for the float layers: f32 unless ``model.precision`` asks for
    fp16 or bf16 (``auto`` is f32: the INT8 accuracy gate records were measured against FP32). bf16 on a CPU
    without BF16 in OPTIMIZATION_CAPABILITIES runs f32, said once per process: FP32 is the reference the BF16
    tolerance is stated against, so nothing is lost but speed, and one config serves a mixed fleet."""
    if config.precision == "fp16":
        return "f16"
    if config.precision != "bf16":
        return "f32"
    capabilities = cpu_capabilities(ov)
    if "BF16" in capabilities:
        return "bf16"
    if not _NO_BF16_SAID:
        _NO_BF16_SAID.append(True)
        log.warning("model.precision bf16: this CPU has no BF16 (OpenVINO's CPU capabilities: %s); its float layers "
                    "run in f32", ", ".join(capabilities))
    return "f32"


def cpu_capabilities(ov: Any) -> list[str]:
    """The CPU plugin's OPTIMIZATION_CAPABILITIES (e.g. FP32, INT8, BF16 on a CPU with AVX512_BF16 or AMX)."""
    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


_NO_BF16_SAID: list[bool] = []  # the fall-back warning is logged once per process, not once per compiled model


def compile_options(config: ModelConfig, cache_dir: pathlib.Path | None, float_hint: str = "f32") -> dict[str, Any]:
    """CPU plugin properties: one stream per concurrent run with ``intra_op_threads`` threads each, no core
    pinning (decode threads share the cores), ``float_hint`` (:func:`float_precision`) for the float layers (a
    Q/DQ graph's quantized layers still run INT8), and the compiled-model cache."""
    runs = max(1, config.concurrent_runs)
    options: dict[str, Any] = {
        "PERFORMANCE_HINT": "THROUGHPUT",
        "NUM_STREAMS": str(runs),
        "ENABLE_CPU_PINNING": False,
        "INFERENCE_PRECISION_HINT": float_hint,
    }
    if config.intra_op_threads > 0:
        options["INFERENCE_NUM_THREADS"] = str(config.intra_op_threads * runs)
    if cache_dir is not None:
        options["CACHE_DIR"] = str(cache_dir)
    return options


def cache_folder(path: pathlib.Path, config: ModelConfig, batch: int, version: str,
                 input_size: tuple[int, int] | None = None, float_hint: str = "f32") -> pathlib.Path:
    """Where OpenVINO caches this model's compiled blobs: keyed like the TensorRT plans (file, SHA-256, batch,
    runtime version), the input size (height x width) where it is not the exported one, and the float layers'
    precision where it is not f32. OpenVINO 2026.4's CPU blob name leaves INFERENCE_PRECISION_HINT out (one blob
    for f32 and bf16; each compile still ran its own precision, as the plugin applies it on import): the folder
    key keeps that from depending on the plugin's internals."""
    from agent.prefilter.model_info import file_digest

    root = engine_cache_root(config.engine_cache_dir, os.environ)
    size = f"-{input_size[0]}x{input_size[1]}" if input_size is not None else ""
    floats = f"-{float_hint}" if float_hint != "f32" else ""
    folder = root / "openvino" / f"{path.stem}-{file_digest(path)[:12]}-b{batch}{size}-ov{version}{floats}"
    return ensure_writable_dir(folder, "OpenVINO compiled-model cache directory")


def open_openvino_session(path: pathlib.Path, config: ModelConfig, task: str | None = None,
                          input_size: tuple[int, int] | None = None) -> tuple[OpenVINOSession, dict[str, str]]:
    """``model.runtime: openvino``: ``path`` compiled for the CPU (cached) as a session, with its metadata.
    ``task`` "detect" with ``model.max_batch`` > 1 tries a free batch dimension. ``input_size`` (height, width):
    a YOLOv8 detector's ONNX graph rewritten for that input size (agent.prefilter.input_size); ModelError for an
    IR or a graph that cannot take it."""
    path = pathlib.Path(path)
    source: Any = None  # the rewritten ONNX graph, for a size other than the exported one
    if input_size is None:
        ov, model, meta = read_openvino_model(path)
    else:  # the file itself is not read into OpenVINO: only its rewritten graph (memory: FP32 weights twice)
        if path.suffix.lower() == IR_SUFFIX:
            raise ModelError(f"model file {path} is an OpenVINO IR, whose input size is fixed when it is converted; "
                             f"model.input_size {input_size[0]}x{input_size[1]} needs the ONNX file (or use "
                             "input_size: square)")
        from agent.prefilter.input_size import load_resized

        ov = load_openvino()
        source = load_resized(path, input_size)
        model = _read_proto(ov, path, source)
        meta = _framework_metadata(model)
    version = str(ov.__version__).split("-")[0]
    batched = None
    if task == "detect" and config.max_batch > 1:
        batched = _batched_model(ov, path, model, config.max_batch, source)
    del source  # OpenVINO holds its own copies: the ONNX graph is not kept while they compile
    if batched is not None:
        session = _compile(ov, batched, path, config, config.max_batch, version, input_size)
        from agent.prefilter.onnx_session import batch_agrees

        if batch_agrees(session):
            return session, meta
        log.info("model %s: a batch does not give per-frame outputs on OpenVINO; one frame per call", path.name)
    return _compile(ov, model, path, config, 1, version, input_size), meta


def _read_proto(ov: Any, path: pathlib.Path, proto: Any) -> Any:
    try:
        return ov.Core().read_model(proto.SerializeToString())
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own untyped errors
        first = (str(exc).strip().splitlines() or ["no reason given"])[0][:300]
        raise ModelError(f"model file {path} rewritten for model.input_size could not be read by OpenVINO: "
                         f"{first}") from None


def _compile(ov: Any, model: Any, path: pathlib.Path, config: ModelConfig, batch: int, version: str,
             input_size: tuple[int, int] | None = None) -> OpenVINOSession:
    hint = float_precision(ov, config)
    folder = cache_folder(path, config, batch, version, input_size, hint)
    try:
        compiled = ov.Core().compile_model(model, "CPU", compile_options(config, folder, hint))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own untyped errors
        first = (str(exc).strip().splitlines() or ["no reason given"])[0][:300]
        raise ModelError(f"model file {path} could not be compiled by OpenVINO {version} for the CPU: {first}") \
            from None
    streams = int(compiled.get_property("NUM_STREAMS"))
    floats = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    session = OpenVINOSession(compiled, max(1, config.concurrent_runs), f"OpenVINO {version} CPU ({floats})")
    log.info("model %s: OpenVINO %s on the CPU, %d stream(s), batch up to %d, float layers in %s, compiled-model "
             "cache in %s", path.name, version, streams, batch, session.float_precision, folder)
    return session


def _batched_model(ov: Any, path: pathlib.Path, model: Any, max_batch: int, source: Any = None) -> Any | None:
    """The model with its batch dimension free (bounded 1..``max_batch``), or None where it cannot be freed.
    ``source``: the ONNX graph ``model`` was read from, when it is not the file's (rewritten in place: ``model``
    is OpenVINO's own copy)."""
    first = list(model.inputs[0].get_partial_shape())
    if len(first) != 4 or not all(d.is_static for d in first[1:]):
        return None
    bounded = ov.PartialShape([ov.Dimension(1, max_batch), *first[1:]])
    candidate = model
    if path.suffix.lower() != IR_SUFFIX:  # an ONNX export's Reshape nodes hold the batch: rewrite them
        import onnx

        from agent.prefilter.graph_rewrite import dynamic_batch

        try:
            proto = onnx.load(str(path)) if source is None else source
            if not dynamic_batch(proto):
                return None
            candidate = ov.Core().read_model(proto.SerializeToString())
        except Exception:  # noqa: BLE001 - the rewrite did not give a graph OpenVINO reads: run as exported
            log.info("model %s: batching rewrite not readable by OpenVINO; one frame per call", path.name)
            return None
    try:
        candidate.reshape({candidate.inputs[0]: bounded})
    except Exception:  # noqa: BLE001 - OpenVINO cannot propagate a free batch through this graph
        return None
    if candidate.outputs[0].get_partial_shape()[0].is_static:
        return None  # the output's batch stayed fixed: the graph does not follow the input's batch
    return candidate
