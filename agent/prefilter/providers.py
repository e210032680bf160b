"""Which ONNX Runtime execution providers to use, in which order, with which options. Pure logic.

``model.providers`` names them short (``tensorrt``, ``cuda``, ``cpu``) or by their
ONNX Runtime names (``TensorrtExecutionProvider``...); ``[auto]`` means every one of
the three this onnxruntime build has, fastest first. :func:`normalise_providers`
turns the config's list into ONNX Runtime names (a config error names the allowed
values); :func:`choose_providers` keeps the ones the installed build has;
:func:`provider_entries` gives each its options: the TensorRT provider gets the
precision flags and an engine + timing cache directory.

Precision (``model.precision``) is resolved against the graph by
:func:`resolve_precision`: a Q/DQ (INT8) graph is explicit quantization, TensorRT
reads the scales from it (no calibrator: TensorRT 11 removed them); ``fp16`` lets
the layers the graph does not quantize run in FP16 too. A float graph runs FP32 or,
when asked, FP16. INT8 from a float graph is refused: quantize it first
(``edge-agent models quantize --flavour tensorrt``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from agent.config.providers import (
    AUTO,
    CPU,
    CUDA,
    TENSORRT,
)
from agent.errors import ModelError

log = logging.getLogger(__name__)

AUTO_ORDER = (TENSORRT, CUDA, CPU)
PRECISIONS = ("auto", "int8", "fp16", "fp32")
GPU_PROVIDERS = (TENSORRT, CUDA)


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """Keep the requested providers that this onnxruntime build has, in the requested order (``auto``: every
    one of TensorRT, CUDA, CPU it has). ModelError when none is left; one warning naming the skipped ones."""
    if list(requested) == [AUTO]:
        usable = [p for p in AUTO_ORDER if p in available]
        if usable:
            log.info("model.providers auto: using %s (onnxruntime has %s)", usable, list(available))
            return usable
        requested = list(AUTO_ORDER)
    usable = [p for p in requested if p in available]
    if not usable:
        hint = ""
        if any(p in GPU_PROVIDERS for p in requested):
            hint = "; for NVIDIA GPUs install the `gpu` extra (pip install 'edge-agent[gpu]')"
        raise ModelError(f"none of the configured model.providers {list(requested)} is available in this "
                         f"onnxruntime build (available: {list(available)}){hint}")
    missing = [p for p in requested if p not in available]
    if missing:
        log.warning("providers not available in this onnxruntime build, skipped: %s (using %s)", missing, usable)
    return usable


@dataclasses.dataclass(frozen=True)
class Precision:
    """What the TensorRT builder is allowed to do: INT8 where the graph has Q/DQ nodes, FP16 elsewhere."""

    name: str  # int8 | fp16 | fp32: what the engine runs (int8 with fp16 => "int8+fp16")
    int8: bool
    fp16: bool


def resolve_precision(requested: str, graph: str, where: str) -> Precision:
    """``requested`` (auto | int8 | fp16 | fp32) for a graph whose own precision is ``graph`` (int8 = Q/DQ nodes,
    fp16, fp32); ModelError naming ``where`` for a combination that cannot be built."""
    if requested not in PRECISIONS:
        raise ModelError(f"precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    quantized = graph == "int8"
    if quantized:
        if requested == "fp32":
            raise ModelError(f"{where} is quantized (Q/DQ nodes): it runs INT8; precision fp32 needs the FP32 "
                             "source model instead")
        if requested == "fp16":
            return Precision("int8+fp16", int8=True, fp16=True)
        return Precision("int8", int8=True, fp16=False)
    if requested == "int8":
        raise ModelError(f"{where} is not quantized ({graph}): INT8 comes from Q/DQ nodes in the graph (TensorRT "
                         "11 has no calibrators); make one with `edge-agent models quantize MODEL --calib FRAMES "
                         "--flavour tensorrt`, or ask for precision fp16")
    if requested == "fp16" or graph == "fp16":
        return Precision("fp16", int8=False, fp16=True)
    return Precision("fp32", int8=False, fp16=False)


def tensorrt_quantization_problem(model: Any) -> str | None:
    """Why TensorRT cannot take this Q/DQ graph (``onnx.ModelProto``), or None. TensorRT takes signed INT8
    with zero points of 0 only (symmetric); ONNX Runtime's CPU flavour (U8S8) uses unsigned, asymmetric
    activations."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or not node.input[2]:
            if node.op_type == "QuantizeLinear" and not any(a.name == "output_dtype" for a in node.attribute):
                return (f"node {node.name or node.op_type!r} quantizes to unsigned 8-bit (no zero point given); "
                        "TensorRT needs signed symmetric INT8 (S8S8)")
            continue
        zero = inits.get(node.input[2])
        if zero is None:
            continue
        if zero.data_type == TensorProto.UINT8:
            return (f"node {node.name or node.op_type!r} uses unsigned 8-bit (U8) activations, the ONNX Runtime CPU "
                    "flavour; TensorRT needs signed symmetric INT8 (S8S8)")
        if numpy_helper.to_array(zero).any():
            return f"node {node.name or node.op_type!r} has a non-zero zero point; TensorRT needs symmetric INT8"
    return None


@dataclasses.dataclass(frozen=True)
class BatchShapes:
    """Shapes of the model's one image input for a TensorRT optimization profile."""

    input_name: str
    chw: tuple[int, int, int]
    min_batch: int
    opt_batch: int
    max_batch: int

    def shape(self, batch: int) -> str:
        c, h, w = self.chw
        return f"{self.input_name}:{batch}x{c}x{h}x{w}"


def tensorrt_ep_options(precision: Precision, cache_dir: pathlib.Path, device_id: int = 0,
                        shapes: BatchShapes | None = None) -> dict[str, Any]:
    """Options for ONNX Runtime's TensorRT provider: precision flags, engine and timing caches in
    ``cache_dir`` (which must be keyed by the model: the provider's own cache key does not see a change of
    weights), and the batch profile when the batch dimension is free."""
    options: dict[str, Any] = {
        "device_id": device_id,
        # a Q/DQ graph still needs the INT8 flag with TensorRT <= 10 (weak typing); the scales come from the graph
        "trt_int8_enable": precision.int8,
        "trt_fp16_enable": precision.fp16,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
    }
    if shapes is not None:
        options["trt_profile_min_shapes"] = shapes.shape(shapes.min_batch)
        options["trt_profile_opt_shapes"] = shapes.shape(shapes.opt_batch)
        options["trt_profile_max_shapes"] = shapes.shape(shapes.max_batch)
    return options


def provider_entries(chosen: Sequence[str], tensorrt: dict[str, Any] | None, device_id: int = 0) -> list[Any]:
    """The ``providers=`` argument of ``onnxruntime.InferenceSession``: names, with options for the GPU ones."""
    entries: list[Any] = []
    for name in chosen:
        if name == TENSORRT:
            if tensorrt is None:
                raise ModelError("the TensorRT provider needs its options (precision, engine cache directory)")
            entries.append((name, tensorrt))
        elif name == CUDA:
            entries.append((name, {"device_id": device_id}))
        else:
            entries.append(name)
    return entries


def engine_cache_root(configured: pathlib.Path | None, env: Mapping[str, str]) -> pathlib.Path:
    """``model.engine_cache_dir``, else ``engines`` in the agent's state directory (``$STATE_DIRECTORY`` under
    systemd, a writable place the unit owns)."""
    if configured is not None:
        return pathlib.Path(configured)
    from agent.config.loader import default_state_dir

    return default_state_dir(env) / "engines"


def ensure_writable_dir(path: pathlib.Path, what: str) -> pathlib.Path:
    """Create ``path`` if needed and check that files can be written there; ModelError naming it otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ModelError(f"{what} {path} is not a writable directory ({exc.strerror or exc}); set "
                         "model.engine_cache_dir (or --cache-dir) to one the agent can write, e.g. under "
                         "$STATE_DIRECTORY") from None
    return path
