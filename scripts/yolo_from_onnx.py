"""Rebuild trainable ultralytics weights from an exported YOLOv8 ONNX detector.

The implementation is ``agent/tooling/training/onnx_to_yolo.py`` (shared with ``edge-agent models train``);
this module keeps the scripts' interface: a file that is not a YOLOv8 export of the model's
architecture ends the script with a message (SystemExit) instead of a ModelError.
"""
from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from agent.errors import ModelError  # noqa: E402
from agent.tooling.training import onnx_to_yolo  # noqa: E402


def load_onnx_into(model: object, onnx_path: pathlib.Path, images: Sequence[np.ndarray]) -> dict[str, float]:
    """Fill ``model`` (an ultralytics DetectionModel of the same architecture) from ``onnx_path``; returns how far
    its output is from the ONNX model's (see ``agent.tooling.training.onnx_to_yolo.load_onnx_into``)."""
    try:
        return onnx_to_yolo.load_onnx_into(model, onnx_path, list(images))
    except ModelError as exc:
        raise SystemExit(str(exc)) from exc
