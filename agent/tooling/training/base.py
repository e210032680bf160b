"""What the base model of a training run is: an ONNX prefilter model, read with the agent's own runtime
(task, classes, input size, whether its weights are INT8), or, for a detector with new classes, an
ultralytics checkpoint (``yolov8n.pt``) or model yaml (``yolov8s.yaml``, from scratch). No torch.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Literal

from agent.config.models import ModelConfig
from agent.errors import ModelError
from agent.prefilter.factory import open_prefilter
from agent.prefilter.model_info import ModelInfo
from agent.prefilter.onnx_session import open_session
from agent.tooling.quantize.int8 import FLAVOURS, METADATA_KEY

EXPECTED = ("an ONNX prefilter model the agent runs: a YOLOv8-layout detector exported by ultralytics (e.g. "
            "models/conveyor-yolov8n.onnx) or the frame classifier of scripts/train_classifier.py (e.g. "
            "models/conveyor-resnet-cls.int8.onnx), or for a detector with new classes an ultralytics checkpoint "
            "(yolov8n.pt) or model yaml (yolov8n.yaml, trained from scratch)")
YAML_NAME = re.compile(r"^yolov8([nsmlx])\.ya?ml$")  # ultralytics' own names: generated when no such file is here
DEFAULT_IMGSZ = 640  # a checkpoint's or yaml's input when the dataset's images do not say (ultralytics' default)
Kind = Literal["onnx", "checkpoint", "yaml"]


@dataclasses.dataclass(frozen=True)
class BaseModel:
    path: pathlib.Path
    name: str  # the model's name without precision suffix: conveyor-yolov8n for conveyor-yolov8n.int8.onnx
    info: ModelInfo | None  # None for a checkpoint or yaml (read by ultralytics when training starts)
    metadata: dict[str, str]  # the ONNX metadata_props as stored (Python reprs)
    quantized: bool  # INT8 QDQ weights (edge-agent models quantize wrote it)
    kind: Kind = "onnx"

    @property
    def task(self) -> str:
        return self.info.task if self.info else "detect"

    @property
    def names(self) -> tuple[str, ...]:
        """The classes; () for a yaml (none yet) or a checkpoint (read when training starts)."""
        return self.info.names if self.info else ()

    @property
    def imgsz(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        return (self.info.input_h, self.info.input_w) if self.info else (DEFAULT_IMGSZ, DEFAULT_IMGSZ)

    @property
    def model_id(self) -> str:
        return self.info.model_id if self.info else self.path.name


def model_name(path: pathlib.Path) -> str:
    """``conveyor-yolov8n.int8.onnx`` -> ``conveyor-yolov8n``; ``x.onnx`` -> ``x``."""
    name = path.name
    for suffix in sorted((f.suffix for f in FLAVOURS.values()), key=len, reverse=True) + [".onnx"]:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def inspect_base(path: pathlib.Path) -> BaseModel:
    """Open ``path`` as the agent would; ModelError saying what was expected when it is not a prefilter model,
    an ultralytics checkpoint or model yaml."""
    path = pathlib.Path(path)
    if path.suffix in (".yaml", ".yml") and (path.is_file() or YAML_NAME.match(path.name)):
        return BaseModel(path=path, name=path.stem, info=None, metadata={}, quantized=False, kind="yaml")
    if path.suffix == ".pt" and path.is_file():
        return BaseModel(path=path, name=path.stem, info=None, metadata={}, quantized=False, kind="checkpoint")
    if not path.is_file():
        raise ModelError(f"--base {path} does not exist; expected {EXPECTED}")
    if path.suffix != ".onnx":
        raise ModelError(f"--base {path} is not an .onnx, .pt or .yaml file; expected {EXPECTED}")
    try:
        model = open_prefilter(path, ModelConfig(path=path, intra_op_threads=1))
    except ModelError as exc:
        raise ModelError(f"--base {path}: {exc}; expected {EXPECTED}") from exc
    _session, meta = open_session(path, ["CPUExecutionProvider"], 1)
    return BaseModel(path=path, name=model_name(path), info=model.info, metadata=dict(meta),
                     quantized=METADATA_KEY in meta)
