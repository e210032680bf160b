"""What a fine-tune hands back to ``candidate``: the exported model, progress, settings as run."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from agent.tooling.training.progress import EpochRow


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    onnx: pathlib.Path  # the exported FP32 model (in the work folder)
    history: tuple[EpochRow, ...]
    train_seconds: float
    settings: dict[str, Any]  # the settings as run, for the card and candidate.json
    details: dict[str, Any]  # architecture, init, input [h, w], tools, machine
