"""The model runtime boundary: building an ONNX Runtime session.

Everything onnxruntime raises while loading is translated into ModelError with
the file named; the detector itself only sees the small ``InferenceSessionLike``
interface, so tests can hand it a fake session.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from agent.errors import ModelError

log = logging.getLogger(__name__)


class IOSpec(Protocol):
    name: str
    shape: list[Any]


class InferenceSessionLike(Protocol):
    def get_inputs(self) -> Sequence[IOSpec]: ...
    def get_outputs(self) -> Sequence[IOSpec]: ...
    def run(self, output_names: list[str] | None, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """Keep the requested providers that this onnxruntime build has, in the requested order."""
    usable = [p for p in requested if p in available]
    if not usable:
        hint = ""
        if any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in requested):
            hint = "; for NVIDIA GPUs install the `gpu` extra (pip install 'edge-agent[gpu]')"
        raise ModelError(f"none of the configured model.providers {list(requested)} is available in this "
                         f"onnxruntime build (available: {list(available)}){hint}")
    missing = [p for p in requested if p not in available]
    if missing:
        log.warning("providers not available, skipped: %s (using %s)", missing, usable)
    return usable


def open_session(
    path: pathlib.Path, providers: Sequence[str], intra_op_threads: int, max_batch: int = 1
) -> tuple[Any, dict[str, str]]:
    """Create an onnxruntime session and return it with the model's custom metadata.

    With ``max_batch`` > 1 a model exported for a batch of 1 is given a free batch dimension
    (``graph_rewrite.dynamic_batch``) when a check shows that a batch of two copies gives two copies
    of the single output; the session's input then has a non-numeric batch dimension. Otherwise
    (the check fails, the graph cannot be rewritten) the model runs one frame per call, as exported."""
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
    model: str | bytes = str(path)
    faster = _rewritten(path, batched=False)
    if faster is not None:
        model = faster
    if max_batch > 1:
        batched = _rewritten(path, batched=True)
        if batched is not None:
            try:
                session = ort.InferenceSession(batched, sess_options=opts, providers=chosen)
            except Exception:  # noqa: BLE001 - the rewrite did not give a valid graph: run as exported
                log.info("model %s: batching rewrite not loadable; one frame per call", path.name)
            else:
                if _batch_agrees(session):
                    return session, dict(session.get_modelmeta().custom_metadata_map)
                log.info("model %s: a batch does not give per-frame outputs; one frame per call", path.name)
    try:
        session = ort.InferenceSession(model, sess_options=opts, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidProtobuf errors
        raise ModelError(f"model file {path} could not be loaded by onnxruntime: "
                         f"{str(exc).strip().splitlines()[0][:300]}; expected a valid ONNX model") from exc
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return session, meta


def _rewritten(path: pathlib.Path, batched: bool) -> bytes | None:
    """The model with agent.prefilter.graph_rewrite's rewrites (and a free batch dimension when
    ``batched``), or None when none applies (or the file is not one onnx can read: then onnxruntime
    reports it, with its own message)."""
    import onnx

    from agent.prefilter.graph_rewrite import dynamic_batch, fuse_dfl_softmax

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


def _batch_agrees(session: Any) -> bool:
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
