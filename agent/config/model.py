"""The prefilter model's config: which file, which runtime, how many runs and threads. Re-exported by
:mod:`agent.config.models`."""

from __future__ import annotations

import os
import pathlib
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import Field, field_validator, model_validator

from agent.config.base import Strict
from agent.config.providers import normalise_providers

REPO_MODELS = pathlib.Path(__file__).resolve().parent.parent.parent / "models"
DEFAULT_MODEL = REPO_MODELS / "conveyor-yolov8n.onnx"  # the FP32 source of the shipped detector
# What the agent runs when the config names no model: the shipped detector's INT8 file, whose accuracy
# gate record (conveyor-yolov8n.int8.gate.json) says it lost no mAP50 against DEFAULT_MODEL.
DEFAULT_PREFILTER = REPO_MODELS / "conveyor-yolov8n.int8.onnx"


INPUT_STRIDE = 32  # a YOLOv8 detector's largest stride: every side of its input is a multiple of it
MAX_INPUT_SIDE = 4096
InputSize: TypeAlias = Literal["auto", "square"] | tuple[int, int]


def check_input_size(value: Any) -> InputSize:
    """``model.input_size``: "auto", "square" or [height, width], each a multiple of 32 from 32 to 4096."""
    if isinstance(value, str) and value in ("auto", "square"):
        return value  # type: ignore[return-value]
    expected = (f'expected "auto", "square" or [height, width] in pixels, each a multiple of {INPUT_STRIDE} '
                f"(the detector's largest stride) from {INPUT_STRIDE} to {MAX_INPUT_SIDE}, e.g. [256, 320]")
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"got {value!r}; {expected}")
    sides = []
    for what, side in zip(("height", "width"), value, strict=True):
        if isinstance(side, bool) or not isinstance(side, int):
            raise ValueError(f"{what} {side!r} is not a whole number; {expected}")
        if side < INPUT_STRIDE or side > MAX_INPUT_SIDE:
            raise ValueError(f"{what} {side} is out of range; {expected}")
        if side % INPUT_STRIDE:
            raise ValueError(f"{what} {side} is not a multiple of {INPUT_STRIDE}; {expected}")
        sides.append(side)
    return sides[0], sides[1]


def default_concurrent_runs() -> int:
    """Two model runs in flight on a box with two or more cores, else one. On the 2-core box, one thread per
    run and two runs gave the agent 1.36x the frames per second of ultralytics' predictor on the same FP32 file,
    against 1.11x with one run on two threads: ONNX Runtime's second thread inside one run of this small model
    adds little (bare loop: 1.40x one thread), a second run nearly doubles it (2.08x; scripts/bench_pipeline.py)."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def default_inference_threads(concurrent_runs: int | None = None) -> int:
    """The cores shared out among the model's concurrent runs, at least one thread each: 1 on a 2-core box with
    two runs. Decoding, letterboxing and publishing run beside the model at a lower priority
    (agent.capture.priority), so they take what the model leaves."""
    runs = concurrent_runs or default_concurrent_runs()
    return max(1, (os.cpu_count() or 1) // runs)


class ModelConfig(Strict):
    path: pathlib.Path = DEFAULT_PREFILTER
    runtime: Literal["onnxruntime", "openvino", "tensorrt", "auto"] = Field(default="onnxruntime", description=(
        "onnxruntime: ONNX Runtime with model.providers; openvino: OpenVINO on the CPU (the `openvino` extra; ONNX or "
        "IR); tensorrt: a native TensorRT engine built from the ONNX file and cached (e.g. Jetson; the `tensorrt` "
        "extra or JetPack); auto: the fastest installed CPU runtime by a short cached probe (docs/openvino.md)"))
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"], min_length=1, description=(
        "ONNX Runtime execution providers in order of preference: tensorrt, cuda, cpu (or their ONNX Runtime "
        "names); [auto] = every one of them this onnxruntime build has. Unavailable ones are skipped with a warning"))
    precision: Literal["auto", "int8", "fp16", "fp32", "bf16"] = Field(default="auto", description=(
        "TensorRT (provider or runtime): auto = int8 for a Q/DQ model, fp32 otherwise; fp16 also runs the "
        "unquantized layers in FP16; int8 needs a Q/DQ model (`edge-agent models quantize --flavour tensorrt`). "
        "OpenVINO: auto = float layers in f32 (the accuracy gate's reference); bf16 runs them in BF16 where the "
        "CPU has it (else f32, logged once); a Q/DQ model's quantized layers stay INT8. bf16 needs runtime "
        "openvino (docs/openvino.md)"))
    engine_cache_dir: pathlib.Path | None = Field(default=None, description=(
        "TensorRT engines and timing caches; default: $STATE_DIRECTORY/engines under systemd, else "
        "$XDG_STATE_HOME/edge-agent/engines or ~/.local/state/edge-agent/engines"))
    gpu_device: Annotated[int, Field(ge=0, le=63)] = Field(default=0, description="CUDA device index (GPU runs)")
    intra_op_threads: Annotated[int, Field(ge=0, le=64)] = Field(
        default_factory=default_inference_threads, description=(
            "ONNX Runtime threads of each model run; default: the cores divided by concurrent_runs, at least 1 "
            "(scripts/bench_pipeline.py); 0 = ONNX Runtime's own choice"))
    concurrent_runs: Annotated[int, Field(ge=1, le=16)] = Field(
        default_factory=default_concurrent_runs, description=(
            "model runs in flight at once, each on its own thread with intra_op_threads threads (ONNX Runtime runs "
            "one session from several threads; the native TensorRT runtime runs one at a time). Events keep their "
            "order. Default: 2 on a box with 2 or more cores, else 1"))
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    iou_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.7
    max_detections: Annotated[int, Field(ge=1, le=1000)] = 100
    max_batch: Annotated[int, Field(ge=1, le=16, description=(
        "frames from up to this many cameras go through one prefilter call when several are ready "
        "(detectors with the YOLOv8 layout; checked at load, else one frame per call); 1 = one call per frame. "
        "Four saturated cameras on a 2-core CPU with two concurrent runs: 1.14x the frames per second of one "
        "call per frame (scripts/bench_cameras.py)"
    ))] = 4
    input_size: InputSize = Field(default="auto", description=(
        "the detector's input size. auto: fit each camera's frames: the model's long side kept, the short side "
        "padded only to a multiple of 32 (a 1280x960 camera runs a 320x320 model at 256x320, about a fifth less "
        "work; one model session per frame size, at most 4, then square); square: the size the model was "
        "exported at; [height, width]: that size for every frame. Needs runtime onnxruntime (without the TensorRT "
        "provider) or openvino with an ONNX file; elsewhere auto means square. Classifiers and anomaly models "
        "keep their own size (docs/openvino.md#the-models-input-size)"))
    require_gate: bool = Field(
        default=False, description="refuse to start with an INT8 model that has no passing accuracy gate record "
        "(<model>.gate.json from `edge-agent models quantize`); without it the agent starts and logs a warning")

    @model_validator(mode="before")
    @classmethod
    def _threads_follow_runs(cls, data: Any) -> Any:
        """Left out, intra_op_threads shares the cores among the concurrent runs the config asks for."""
        if isinstance(data, dict) and "intra_op_threads" not in data and "concurrent_runs" in data:
            try:
                runs = int(data["concurrent_runs"])  # from YAML an int, from the environment a string
            except (TypeError, ValueError):
                return data  # the field's own check names what is wrong
            data = {**data, "intra_op_threads": default_inference_threads(max(1, runs))}
        return data

    @model_validator(mode="after")
    def _bf16_needs_openvino(self) -> ModelConfig:
        if self.precision == "bf16" and self.runtime != "openvino":
            why = " (auto would compare the runtimes at unlike precisions)" if self.runtime == "auto" else ""
            raise ValueError(f"precision bf16 runs on runtime openvino only (its CPU plugin's BF16 float layers); "
                             f"runtime {self.runtime} takes precision auto, int8, fp16 or fp32{why}. Set "
                             "model.runtime: openvino, or another precision")
        return self

    @field_validator("input_size", mode="before")
    @classmethod
    def _input_size(cls, v: Any) -> InputSize:
        return check_input_size(v)

    @field_validator("providers")
    @classmethod
    def _providers(cls, v: list[str]) -> list[str]:
        return normalise_providers(v)
