"""The model's warm-up at start-up: one inference on a blank frame of its input size (the first call allocates,
and on a GPU builds kernels), and what is then known of the model (:class:`ModelFacts`: the STATUS line,
``/metrics``' ``edge_agent_model_info`` and ``doctor`` say it)."""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from agent.core.ports import DescribedPrefilter, Prefilter
from agent.errors import ModelError
from agent.prefilter.gate_record import GateStatus

__all__ = ["ModelFacts", "warm_up"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What ``/metrics`` (``edge_agent_model_info``) and the STATUS line say about the model."""

    model_id: str
    task: str
    precision: str  # fp32 | fp16 | int8 | unknown
    gate: str  # passed | failed | missing | stale | unreadable | not_int8 | unknown
    providers: tuple[str, ...]  # the execution providers the session really uses
    warm_up_ms: float


def warm_up(prefilter: Prefilter, gate: GateStatus | None, precision: str | None) -> ModelFacts:
    """One inference on a blank frame of the model's input size (the first call allocates, and on a GPU
    builds kernels); ModelError when it fails. Returns what is known about the model."""
    info = prefilter.info if isinstance(prefilter, DescribedPrefilter) else None
    width, height = (int(info.input_w), int(info.input_h)) if info is not None else (640, 480)
    blank = np.zeros((height, width, 3), np.uint8)
    t0 = time.perf_counter()
    try:
        prefilter.infer(blank)
    except ModelError:
        raise
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"the model's warm-up inference on a blank {width}x{height} frame failed: {exc}; the "
                         "model loads but cannot run here (check model.providers and `edge-agent doctor`)") from exc
    ms = (time.perf_counter() - t0) * 1000.0
    session = getattr(prefilter, "session", None)
    providers = tuple(session.get_providers()) if session is not None and hasattr(session, "get_providers") else ()
    facts = ModelFacts(
        model_id=info.model_id if info is not None else type(prefilter).__name__,
        task=info.task if info is not None else "detect",
        precision=precision or "unknown", gate=gate.state if gate is not None else "unknown", providers=providers,
        warm_up_ms=ms)
    log.info("model %s warmed up in %.1f ms (providers: %s)", facts.model_id, ms, ", ".join(providers) or "?")
    return facts
