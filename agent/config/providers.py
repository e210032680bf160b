"""The names ``model.providers`` accepts, and their check: part of the config's vocabulary, so that
validating a config loads nothing of the prefilter. :mod:`agent.prefilter.providers` chooses among them
at run time and gives each its options.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["AUTO", "CPU", "CUDA", "PROVIDER_NAMES", "TENSORRT", "allowed_provider_names", "normalise_providers"]

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
AUTO = "auto"
PROVIDER_NAMES = {"tensorrt": TENSORRT, "cuda": CUDA, "cpu": CPU}


def allowed_provider_names() -> str:
    return ", ".join([*PROVIDER_NAMES, *PROVIDER_NAMES.values(), AUTO])


def normalise_providers(names: Sequence[str]) -> list[str]:
    """The config's provider list as ONNX Runtime names (``["auto"]`` stays as it is); ValueError
    naming the allowed values for an unknown name, a repeated one, or ``auto`` beside others."""
    if not names:
        raise ValueError(f"empty; expected a list of: {allowed_provider_names()}")
    by_lower = dict(PROVIDER_NAMES) | {v.lower(): v for v in PROVIDER_NAMES.values()}
    out: list[str] = []
    for name in names:
        key = str(name).strip().lower()
        if key == AUTO:
            if len(names) != 1:
                raise ValueError("'auto' stands alone (every provider this onnxruntime build has, "
                                 f"tensorrt, cuda, cpu in that order); got {list(names)}")
            return [AUTO]
        if key not in by_lower:
            raise ValueError(f"unknown provider {name!r}; allowed: {allowed_provider_names()}")
        full = by_lower[key]
        if full in out:
            raise ValueError(f"{name!r} is listed twice")
        out.append(full)
    return out
