"""What a prefilter model is: task, classes, input size. Read from the ONNX
metadata that ultralytics writes (Python-repr strings, parsed with
``ast.literal_eval``), or from a sidecar ``<model>.json`` next to the file for
ONNX detectors from other tools. Pure logic apart from reading the sidecar.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Mapping
from typing import Any

from agent.errors import ModelError, ModelLayoutError
from agent.prefilter.yolo_decode import expected_anchor_count

SIDECAR_HELP = ('a sidecar file MODEL.json such as {"task": "detect", "names": ["scratch", "hole"], '
                '"imgsz": [320, 320]}')


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    model_id: str  # "<file stem>@<first 12 hex of sha256>"
    path: pathlib.Path
    task: str  # "detect" (this release runs detectors)
    names: tuple[str, ...]
    input_w: int
    input_h: int
    input_name: str
    output_name: str
    metadata_source: str  # "onnx metadata" | "sidecar <file>"


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
        out["imgsz"] = [int(v) for v in imgsz]
    return out


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
    if len(input_shape) != 4 or input_shape[1] not in (3, "3"):
        raise ModelLayoutError(f"{where}: expected an image input of shape (batch, 3, height, width), "
                               f"got {input_shape}")
    h, w = input_shape[2], input_shape[3]
    if not isinstance(h, int) or not isinstance(w, int):
        if imgsz is None:
            raise ModelLayoutError(f"{where}: the input size is dynamic ({input_shape}) and no imgsz is given "
                                   f"in the metadata; export with a fixed imgsz or add {SIDECAR_HELP}")
        h, w = imgsz
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
