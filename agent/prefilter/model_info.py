"""What a prefilter model is: task, classes, input size, input preparation. Read
from the ONNX metadata (``metadata_props``; values are Python-repr strings,
parsed with ``ast.literal_eval``, as ultralytics writes them), or, when the
model has no class names there, from a sidecar ``<model>.json`` next to the file
(a JSON object with the same keys, plain JSON values). Pure logic apart from
reading the sidecar.

Keys the prefilter reads (every other key, e.g. ultralytics' ``stride`` or
``args``, is ignored):

    task           "detect" (YOLOv8 output layout) or "classify"; default "detect"
    names          class names: {0: 'pass', 1: 'scratch'} or ['pass', 'scratch']; required
    imgsz          input [height, width] (or one int for a square); needed when the graph's input is dynamic

Anomaly models (``task`` "anomaly", agent.prefilter.anomaly) need no ``names`` and read the classifier keys
below, and:

    threshold      the score above which a frame is anomalous, 0 < t < 1; required

Classifiers (``task`` "classify") and anomaly models; the defaults are what an ultralytics
``yolov8n-cls`` export does, so such a model runs without extra keys:

    resize         how the frame is fitted into the input: "stretch", "letterbox" (grey bars, aspect kept)
                   or "center-crop" (cover the input, keep the centre); default "center-crop"
    interpolation  OpenCV resize filter: "linear" or "area" (better for shrinking); default "linear"
    mean, std      per RGB channel, applied to values in 0..1: (v / 255 - mean) / std;
                   default [0, 0, 0] and [1, 1, 1] (only / 255)
    output         what output0 (batch, classes) holds: "probabilities" (softmax already applied)
                   or "logits" (the prefilter applies the softmax); default "probabilities"

The shipped ``models/conveyor-resnet-cls.int8.onnx`` has ``task`` "classify", ``imgsz``
[192, 256], ``resize`` "stretch", ``interpolation`` "area", ImageNet ``mean``/``std``
and ``output`` "probabilities" (written by ``scripts/train_classifier.py``).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Mapping
from typing import Any, Literal, get_args

from agent.errors import ModelError, ModelLayoutError
from agent.prefilter.classify_input import (
    IDENTITY,
    INTERPOLATIONS,
    RESIZE_MODES,
    Interpolation,
    Normalisation,
    ResizeMode,
)
from agent.prefilter.yolo_decode import expected_anchor_count

SIDECAR_HELP = ('a sidecar file MODEL.json such as {"task": "detect", "names": ["scratch", "hole"], '
                '"imgsz": [320, 320]}')
TASKS = ("detect", "classify", "anomaly")
ANOMALY_OUTPUTS = ("anomaly_map", "score")
OutputKind = Literal["probabilities", "logits"]
OUTPUT_KINDS: tuple[str, ...] = get_args(OutputKind)


@dataclasses.dataclass(frozen=True)
class ClassifierInput:
    """How a classifier wants its frames prepared and what its output holds."""

    resize: ResizeMode = "center-crop"
    interpolation: Interpolation = "linear"
    normalisation: Normalisation = IDENTITY
    output: OutputKind = "probabilities"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    model_id: str  # "<file stem>@<first 12 hex of sha256>"
    path: pathlib.Path
    task: str  # "detect" | "classify"
    names: tuple[str, ...]
    input_w: int
    input_h: int
    input_name: str
    output_name: str
    metadata_source: str  # "onnx metadata" | "sidecar <file>"
    classifier_input: ClassifierInput | None = None  # classifiers and anomaly models
    anomaly_threshold: float | None = None  # anomaly models: the score threshold (metadata ``threshold``)
    score_output: str = ""  # anomaly models: the name of the score output (output_name is the map's)


def file_digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _literal(value: str, key: str, where: str) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError) as exc:
        raise ModelError(f"{where}: metadata key {key!r} is not a Python literal: {value[:80]!r}") from exc


def parse_metadata(meta: Mapping[str, str], where: str) -> dict[str, Any]:
    """ultralytics metadata (string values) -> task, names (tuple), imgsz ([h, w])."""
    out: dict[str, Any] = {}
    if "task" in meta:
        out["task"] = meta["task"].strip()
    if "names" in meta:
        names = _literal(meta["names"], "names", where)
        if isinstance(names, dict):
            keys = sorted(names)
            if keys != list(range(len(keys))):
                raise ModelError(f"{where}: class ids in 'names' must be 0..n-1, got {keys}")
            names = [names[k] for k in keys]
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise ModelError(f"{where}: 'names' must be a list or {{id: name}} map of strings")
        out["names"] = tuple(names)
    if "imgsz" in meta:
        imgsz = _literal(meta["imgsz"], "imgsz", where)
        if isinstance(imgsz, int):
            imgsz = [imgsz, imgsz]
        if not isinstance(imgsz, list | tuple) or len(imgsz) != 2 or \
                not all(isinstance(v, int) and v > 0 for v in imgsz):
            raise ModelError(f"{where}: 'imgsz' must be [height, width] (or one int) of positive whole numbers, "
                             f"got {meta['imgsz'][:80]!r}")
        out["imgsz"] = [int(v) for v in imgsz]
    for key, allowed in (("resize", RESIZE_MODES), ("interpolation", INTERPOLATIONS), ("output", OUTPUT_KINDS)):
        if key in meta:
            value = meta[key].strip()
            if value not in allowed:
                raise ModelError(f"{where}: metadata key {key!r} is {value!r}; expected one of {', '.join(allowed)}")
            out[key] = value
    if "threshold" in meta:
        value = _literal(meta["threshold"], "threshold", where)
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 < value < 1.0:
            raise ModelError(f"{where}: metadata key 'threshold' must be a number between 0 and 1 (exclusive), "
                             f"got {meta['threshold'][:80]!r}")
        out["threshold"] = float(value)
    for key in ("mean", "std"):
        if key in meta:
            values = _literal(meta[key], key, where)
            if not isinstance(values, list | tuple) or len(values) != 3 or \
                    not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                raise ModelError(f"{where}: metadata key {key!r} must be 3 numbers (R, G, B, for values in 0..1), "
                                 f"got {meta[key][:80]!r}")
            if key == "std" and any(v <= 0 for v in values):
                raise ModelError(f"{where}: metadata key 'std' must be 3 numbers above 0, got {meta[key][:80]!r}")
            out[key] = tuple(float(v) for v in values)
    return out


def classifier_input(parsed: Mapping[str, Any]) -> ClassifierInput:
    """The classifier keys of parsed metadata, with ultralytics' ``-cls`` defaults for the missing ones."""
    d = ClassifierInput()
    return ClassifierInput(
        resize=parsed.get("resize", d.resize),
        interpolation=parsed.get("interpolation", d.interpolation),
        normalisation=Normalisation(parsed.get("mean", d.normalisation.mean), parsed.get("std", d.normalisation.std)),
        output=parsed.get("output", d.output),
    )


def load_metadata(path: pathlib.Path, meta: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """Parsed metadata of a model, and where it came from: the ONNX metadata when it names the
    classes, else the sidecar ``<model>.json``. Checks the task."""
    where = f"model {path}"
    parsed = parse_metadata(meta, where)
    source = "onnx metadata"
    if "names" not in parsed and parsed.get("task") == "anomaly":
        parsed["names"] = ("anomaly",)  # one kind of finding; no class names needed
    if "names" not in parsed:
        side = read_sidecar(path)
        if side is None:
            raise ModelError(f"{where}: no class names in the ONNX metadata and no sidecar {path.stem}.json; "
                             f"expected an ultralytics export or {SIDECAR_HELP}")
        parsed, source = side
        where = f"{where} ({source})"
    task = parsed.setdefault("task", "detect")
    if task not in TASKS:
        raise ModelError(f"{where}: task is {task!r}; the prefilter runs {', '.join(repr(t) for t in TASKS)} "
                         "models (a YOLOv8 detector, an image classifier or an anomaly model)")
    if not parsed["names"]:
        raise ModelError(f"{where}: 'names' is empty; expected at least one class name")
    return parsed, source


def read_sidecar(model_path: pathlib.Path) -> tuple[dict[str, Any], str] | None:
    side = model_path.with_suffix(".json")
    if not side.exists():
        return None
    try:
        raw = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"sidecar {side}: cannot read it as JSON ({exc}); expected {SIDECAR_HELP}") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"sidecar {side}: expected a JSON object, {SIDECAR_HELP}")
    return parse_metadata({k: repr(v) if not isinstance(v, str) else v for k, v in raw.items()},
                          f"sidecar {side}"), f"sidecar {side.name}"


def check_detector_layout(
    where: str, names: tuple[str, ...], input_shape: list[Any], output_shape: list[Any], imgsz: list[int] | None
) -> tuple[int, int]:
    """Validate a YOLOv8 detector's input (B, 3, H, W) and output (B, 4+nc, N).
    Returns the input (width, height)."""
    w, h = _input_size(where, input_shape, imgsz)
    nc = len(names)
    expected_rows = 4 + nc
    if len(output_shape) != 3:
        raise ModelLayoutError(
            f"{where}: expected a YOLOv8 detection output of shape (batch, 4 + classes, anchors) = "
            f"(1, {expected_rows}, {expected_anchor_count(w, h)}) for {nc} classes at {w}x{h}, got {output_shape}"
            + (" — this looks like an NMS-exported model (nms=True); export without nms"
               if output_shape[-1:] == [6] else ""))
    rows, anchors = output_shape[1], output_shape[2]
    if rows != expected_rows:
        raise ModelLayoutError(
            f"{where}: output has {rows} rows per anchor, expected 4 box values + {nc} class scores = "
            f"{expected_rows} (classes: {', '.join(names)})"
            + (" — this looks like an NMS-exported model (nms=True), output (batch, max_det, 6); "
               "export without nms" if anchors == 6 else ""))
    if isinstance(anchors, int) and anchors != expected_anchor_count(w, h):
        raise ModelLayoutError(
            f"{where}: output has {anchors} anchors, a YOLOv8 head at {w}x{h} has "
            f"{expected_anchor_count(w, h)} (strides 8, 16, 32)")
    return w, h


def _input_size(where: str, input_shape: list[Any], imgsz: list[int] | None) -> tuple[int, int]:
    """(width, height) of an image input (batch, 3, height, width); from ``imgsz`` where it is dynamic."""
    if len(input_shape) != 4 or input_shape[1] not in (3, "3"):
        raise ModelLayoutError(f"{where}: expected an image input of shape (batch, 3, height, width), "
                               f"got {input_shape}")
    h, w = input_shape[2], input_shape[3]
    if not isinstance(h, int) or not isinstance(w, int):
        if imgsz is None:
            raise ModelLayoutError(f"{where}: the input size is dynamic ({input_shape}) and no imgsz is given "
                                   f"in the metadata; export with a fixed imgsz or add {SIDECAR_HELP}")
        h, w = imgsz
    return w, h


def check_classifier_layout(
    where: str, names: tuple[str, ...], input_shape: list[Any], output_shape: list[Any], imgsz: list[int] | None
) -> tuple[int, int]:
    """Validate a classifier's input (B, 3, H, W) and output (B, nc), B being 1 or dynamic.
    Returns the input (width, height)."""
    w, h = _input_size(where, input_shape, imgsz)
    if imgsz is not None and all(isinstance(v, int) for v in input_shape[2:]) and list(imgsz) != [h, w]:
        raise ModelLayoutError(f"{where}: metadata imgsz {list(imgsz)} ([height, width]) disagrees with the input "
                               f"shape {input_shape}; expected imgsz [{h}, {w}]")
    if isinstance(input_shape[0], int) and input_shape[0] != 1:
        raise ModelLayoutError(f"{where}: the input has a fixed batch of {input_shape[0]}; expected batch 1 "
                               "or a dynamic batch (the prefilter sends one frame per call)")
    nc = len(names)
    if len(output_shape) != 2:
        hint = ""
        if len(output_shape) == 3:
            hint = (" — this looks like a detector's output (batch, 4 + classes, anchors); a YOLOv8 detector "
                    "needs task 'detect' in its metadata")
        raise ModelLayoutError(f"{where}: expected a classification output of shape (batch, classes) = (1, {nc}) "
                               f"for {nc} classes ({', '.join(names)}), got {output_shape}{hint}")
    if isinstance(output_shape[1], int) and output_shape[1] != nc:
        raise ModelLayoutError(f"{where}: the output has {output_shape[1]} class scores, but the metadata names "
                               f"{nc} classes ({', '.join(names)}); expected one name per output")
    return w, h


def check_anomaly_layout(where: str, inputs: Any, outputs: Any, imgsz: list[int] | None) -> tuple[int, int, str, str]:
    """Validate an anomaly model: one image input (batch 1 or dynamic, 3, H, W), outputs ``anomaly_map``
    (batch, 1, h, w) and ``score`` (batch,). Returns (input width, height, map output name, score output name)."""
    if len(inputs) != 1:
        raise ModelLayoutError(f"{where}: expected 1 image input, got {len(inputs)}")
    shape = list(inputs[0].shape)
    w, h = _input_size(where, shape, imgsz)
    if isinstance(shape[0], int) and shape[0] != 1:
        raise ModelLayoutError(f"{where}: the input has a fixed batch of {shape[0]}; expected batch 1 or dynamic")
    by_name = {o.name: list(o.shape) for o in outputs}
    if sorted(by_name) != sorted(ANOMALY_OUTPUTS):
        raise ModelLayoutError(f"{where}: expected two outputs named anomaly_map (batch, 1, h, w) and score "
                               f"(batch,), got {', '.join(f'{k} {v}' for k, v in by_name.items()) or 'none'}")
    amap, score = by_name["anomaly_map"], by_name["score"]
    if len(amap) != 4 or amap[1] not in (1, "1") or len(score) != 1:
        raise ModelLayoutError(f"{where}: expected anomaly_map (batch, 1, h, w) and score (batch,), got "
                               f"anomaly_map {amap} and score {score}")
    return w, h, "anomaly_map", "score"
