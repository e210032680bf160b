"""What a TensorRT plan depends on: the key it is cached under. Pure logic.

A serialized engine (a "plan") only runs on the TensorRT version and the GPU it was
built with, and only does what it was built for (precision, batch sizes). So the
cache key is: the ONNX file's SHA-256, the GPU's name and compute capability, the
TensorRT version, the precision, the batch profile (min:opt:max), and the version of
the recipe this module builds with (raised when the graph rewrites or builder flags
change). A change of any part means a new plan; :meth:`EngineKey.changes` says which
parts changed, for the log line that explains a rebuild.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = ["RECIPE_VERSION", "BatchProfile", "EngineKey"]

RECIPE_VERSION = 1  # raise when the builder's graph rewrites, flags or profile handling change
MAX_PROFILE_BATCH = 64


@dataclasses.dataclass(frozen=True)
class BatchProfile:
    """Batch sizes an engine takes: ``min`` to ``max``, tuned for ``opt``."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max <= MAX_PROFILE_BATCH:
            raise ValueError(f"batch profile {self.min}:{self.opt}:{self.max}: expected 1 <= MIN <= OPT <= MAX <= "
                             f"{MAX_PROFILE_BATCH}")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``MIN:OPT:MAX`` (e.g. ``1:4:8``) or one number N (= ``1:N:N``); ValueError saying what was expected."""
        parts = [p.strip() for p in str(text).split(":")]
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"batch profile {text!r}: expected MIN:OPT:MAX (e.g. 1:4:8) or one batch size N") from None
        if len(numbers) == 1 and numbers[0] >= 1:
            return cls(1, numbers[0], numbers[0])
        if len(numbers) != 3:
            raise ValueError(f"batch profile {text!r}: expected MIN:OPT:MAX (e.g. 1:4:8) or one batch size N")
        return cls(*numbers)

    @classmethod
    def for_max_batch(cls, max_batch: int) -> BatchProfile:
        """The profile the agent builds for ``model.max_batch``: any batch from 1 up, tuned for the largest."""
        return cls(1, max_batch, max_batch)

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclasses.dataclass(frozen=True)
class EngineKey:
    model_sha256: str
    gpu_name: str
    compute_capability: str  # "8.7"
    tensorrt_version: str
    precision: str  # int8 | int8+fp16 | fp16 | fp32 (agent.prefilter.providers.Precision.name)
    batch: BatchProfile
    recipe: int = RECIPE_VERSION

    _LABELS: ClassVar[dict[str, str]] = {
        "model_sha256": "model file", "gpu_name": "GPU", "compute_capability": "compute capability",
        "tensorrt_version": "TensorRT version", "precision": "precision", "batch": "batch profile",
        "recipe": "edge-agent build recipe",
    }

    def as_dict(self) -> dict[str, Any]:
        return {"model_sha256": self.model_sha256, "gpu_name": self.gpu_name,
                "compute_capability": self.compute_capability, "tensorrt_version": self.tensorrt_version,
                "precision": self.precision, "batch": str(self.batch), "recipe": self.recipe}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineKey:
        """ValueError when ``data`` is not a key written by :meth:`as_dict`."""
        if not isinstance(data, Mapping):
            raise ValueError(f"engine key: expected an object, got {type(data).__name__}")
        missing = [k for k in cls._LABELS if k not in data]
        if missing:
            raise ValueError(f"engine key: missing {', '.join(missing)}")
        text_fields = ("model_sha256", "gpu_name", "compute_capability", "tensorrt_version", "precision")
        if not all(isinstance(data[k], str) for k in text_fields) or not isinstance(data["recipe"], int):
            raise ValueError("engine key: a field has the wrong type")
        return cls(model_sha256=data["model_sha256"], gpu_name=data["gpu_name"],
                   compute_capability=data["compute_capability"], tensorrt_version=data["tensorrt_version"],
                   precision=data["precision"], batch=BatchProfile.parse(data["batch"]), recipe=data["recipe"])

    def digest(self) -> str:
        """A short stable id of every part (part of the plan's file name)."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def changes(self, old: EngineKey) -> list[str]:
        """What differs from ``old``, one phrase per part: ``TensorRT version 10.3.0 -> 10.16.1``."""
        new_d, old_d = self.as_dict(), old.as_dict()
        out = []
        for field, label in self._LABELS.items():
            if new_d[field] != old_d[field]:
                before, after = old_d[field], new_d[field]
                if field == "model_sha256":
                    before, after = str(before)[:12], str(after)[:12]
                out.append(f"{label} {before} -> {after}")
        return out

    def describe(self) -> str:
        return (f"{self.precision}, batch {self.batch}, TensorRT {self.tensorrt_version}, {self.gpu_name} "
                f"(sm {self.compute_capability}), model {self.model_sha256[:12]}")
