"""From an ONNX file to a running TensorRT engine: prepare the graph, find or build the plan, open it.

* :func:`read_model` / :func:`prepare_model` (CPU only): the graph TensorRT gets, its
  precision (refusing what TensorRT cannot build, before any GPU library is touched),
  its image input, and its batch profile (the batch dimension is freed with
  ``graph_rewrite.dynamic_batch`` when the profile takes more than one frame).
* :func:`ensure_engine`: the cache key (:class:`EngineKey`) from the prepared model and
  the :class:`Platform`, then the cached plan or a new one from ``build`` (the real
  :func:`builder.build_plan`, or a fake in tests).
* :func:`open_tensorrt_session`: what ``model.runtime: tensorrt`` does at load: all of
  the above, then a :class:`TensorRTSession`; a plan TensorRT refuses is dropped and
  built again once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
from collections.abc import Callable
from typing import Any

from agent.config.models import ModelConfig
from agent.errors import ModelError
from agent.prefilter.providers import (
    Precision,
    engine_cache_root,
    resolve_precision,
    tensorrt_quantization_problem,
)
from agent.prefilter.tensorrt.builder import BuildRequest, Report
from agent.prefilter.tensorrt.engine_cache import CachedEngine, EngineCache
from agent.prefilter.tensorrt.engine_key import BatchProfile, EngineKey
from agent.prefilter.tensorrt.platform import Platform

__all__ = ["PreparedModel", "default_batch", "ensure_engine", "load_engine", "open_tensorrt_session",
           "prepare_model", "read_model"]

log = logging.getLogger(__name__)

Builder = Callable[[BuildRequest, Report], bytes]


@dataclasses.dataclass(frozen=True)
class PreparedModel:
    path: pathlib.Path
    onnx: bytes
    sha256: str
    precision: Precision
    batch: BatchProfile
    input_name: str
    chw: tuple[int, int, int]
    metadata: dict[str, str]


def read_model(path: pathlib.Path) -> tuple[Any, dict[str, str]]:
    """The ONNX graph and its metadata; ModelError naming the file when it is not one."""
    import onnx

    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist or is not a file; expected an ONNX file")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise ModelError(f"model file {path} is not a readable ONNX model ({str(exc).splitlines()[0][:200]})") \
            from None
    return proto, {p.key: p.value for p in proto.metadata_props}


def default_batch(task: str, max_batch: int) -> BatchProfile:
    """The profile the agent uses: detectors take up to ``model.max_batch`` frames a call, classifiers one."""
    return BatchProfile.for_max_batch(max_batch) if task == "detect" and max_batch > 1 else BatchProfile(1, 1, 1)


def prepare_model(path: pathlib.Path, proto: Any, precision: str, batch: BatchProfile) -> PreparedModel:
    """Check and rewrite ``proto`` (changed in place) for a TensorRT build; ModelError saying what is wrong."""
    from agent.prefilter.gate_record import graph_precision
    from agent.prefilter.graph_rewrite import dynamic_batch
    from agent.prefilter.model_info import file_digest

    where = f"model {path}"
    graph = graph_precision(proto)
    resolved = resolve_precision(precision, graph, where)
    if graph == "int8":
        problem = tensorrt_quantization_problem(proto)
        if problem is not None:
            raise ModelError(f"{where} cannot be built by TensorRT: {problem}. Make the TensorRT flavour with "
                             "`edge-agent models quantize FP32_MODEL --calib FRAMES --flavour tensorrt` (S8S8 "
                             "symmetric), or build FP16 from the FP32 model (--precision fp16)")
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"{where}: expected one image input, got {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:]):
        raise ModelError(f"{where}: expected an image input of shape (batch, C, H, W) with C, H and W fixed")
    c, h, w = (int(d.dim_value) for d in dims[1:])
    fixed = int(dims[0].dim_value) if dims[0].HasField("dim_value") else None
    if fixed is not None and fixed != 1:
        raise ModelError(f"{where}: exported for a batch of {fixed}; export it with batch 1 or a dynamic batch")
    if batch.max > 1 and fixed == 1:
        dynamic_batch(proto)
        if proto.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value"):
            raise ModelError(f"{where}: its batch dimension cannot be freed (a Reshape the rewrite cannot read); "
                             "build it for batch 1 (--batch 1, or model.max_batch: 1)")
    return PreparedModel(path=path, onnx=proto.SerializeToString(), sha256=file_digest(path), precision=resolved,
                         batch=batch, input_name=inputs[0].name, chw=(c, h, w),
                         metadata={p.key: p.value for p in proto.metadata_props})


def engine_key(prepared: PreparedModel, platform: Platform) -> EngineKey:
    return EngineKey(model_sha256=prepared.sha256, gpu_name=platform.gpu_name,
                     compute_capability=platform.compute_capability, tensorrt_version=platform.tensorrt_version,
                     precision=prepared.precision.name, batch=prepared.batch)


def timing_cache_path(cache_dir: pathlib.Path, platform: Platform) -> pathlib.Path:
    """One timing cache per GPU model and TensorRT version (tactic timings are only valid there)."""
    gpu = re.sub(r"[^A-Za-z0-9_.-]+", "_", platform.gpu_name) or "gpu"
    return cache_dir / f"timing.{gpu}.sm{platform.compute_capability}.trt{platform.tensorrt_version}.cache"


def ensure_engine(prepared: PreparedModel, cache_dir: pathlib.Path, platform: Platform, build: Builder,
                  report: Report, *, force: bool = False) -> tuple[CachedEngine, bool]:
    """The cached plan for this model, precision, batch profile, GPU and TensorRT, or a new one (True)."""
    key = engine_key(prepared, platform)
    cache = EngineCache(cache_dir)
    name = prepared.path.name
    if force:
        found = cache.lookup(name, key)
        if found is not None:
            cache.invalidate(found, "built again on request (--force)")

    def run_build() -> bytes:
        report(f"building a TensorRT engine for {name}: {key.describe()}")
        return build(BuildRequest(onnx=prepared.onnx, model_name=name, precision=prepared.precision,
                                  batch=prepared.batch, input_name=prepared.input_name, chw=prepared.chw,
                                  timing_cache=timing_cache_path(cache_dir, platform), device_id=platform.device_id),
                     report)

    return cache.get_or_build(name, key, run_build, report)


def load_engine(prepared: PreparedModel, cache_dir: pathlib.Path, platform: Platform, build: Builder,
                report: Report, *, force: bool = False) -> tuple[Any, CachedEngine, bool]:
    """The cached (or new) plan opened as a :class:`TensorRTSession`; a plan TensorRT refuses (another version
    wrote it, it is damaged in a way the sidecar cannot see) is dropped and built again, once."""
    from agent.prefilter.tensorrt.runner import PlanRejected, TensorRTSession

    entry, built = ensure_engine(prepared, cache_dir, platform, build, report, force=force)
    try:
        return TensorRTSession(entry.read_plan(), platform.device_id, entry.plan.name), entry, built
    except PlanRejected as exc:
        EngineCache(cache_dir).invalidate(entry, str(exc))
    entry, built = ensure_engine(prepared, cache_dir, platform, build, report)
    return TensorRTSession(entry.read_plan(), platform.device_id, entry.plan.name), entry, built


def open_tensorrt_session(path: pathlib.Path, config: ModelConfig, *, build: Builder | None = None,
                          platform: Platform | None = None) -> tuple[Any, dict[str, str]]:
    """``model.runtime: tensorrt``: the engine for ``path`` (built and cached when the key changed) as a
    session, with the ONNX file's metadata. Progress goes to the log at INFO."""
    from agent.prefilter.model_info import load_metadata
    from agent.prefilter.tensorrt.builder import build_plan
    from agent.prefilter.tensorrt.platform import probe_platform

    path = pathlib.Path(path)
    proto, meta = read_model(path)
    parsed, _source = load_metadata(path, meta)
    prepared = prepare_model(path, proto, config.precision, default_batch(parsed["task"], config.max_batch))
    del proto
    platform = platform or probe_platform(config.gpu_device)
    cache_dir = engine_cache_root(config.engine_cache_dir, os.environ)

    def report(line: str) -> None:
        log.info("tensorrt %s: %s", path.name, line)

    session, entry, built = load_engine(prepared, cache_dir, platform, build or build_plan, report)
    log.info("model %s: TensorRT engine %s (%s), %s", path.name, entry.plan.name, "built now" if built else "cached",
             entry.key.describe())
    return session, prepared.metadata
