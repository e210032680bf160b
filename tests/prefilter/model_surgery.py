"""Real models changed on purpose with onnx graph surgery, for tests that need a genuinely different model.

* :func:`blind_detector`: the shipped FP32 detector with one class's score bias pushed down to -30 in the
  three class-branch output convolutions (``/model.22/cv3.*/cv3.*.2/Conv``, one bias per class). The
  class's scores become sigmoid(logit - 30 - b) < 1e-9, below any confidence threshold: a detector that
  cannot see that class. Its other classes are untouched, so its mAP50 drops by about that class's AP / 4.
* :func:`renamed_classes`: the same weights with other class names in the metadata.
* :func:`timid_detector`: every class score logit lowered by the same amount: the same ranking, lower confidences.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import numpy_helper

from agent.config.models import DEFAULT_MODEL

CLASS_BRANCH = "/model.22/cv3."  # YOLOv8 head: cv3.<scale>.2 is the class-score convolution of each scale


def blind_detector(out: pathlib.Path, class_id: int, source: pathlib.Path = DEFAULT_MODEL) -> pathlib.Path:
    model = onnx.load(str(source))
    initializers = {t.name: t for t in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and node.name.startswith(CLASS_BRANCH) and node.name.endswith(".2/Conv"):
            bias = initializers[node.input[2]]
            values = numpy_helper.to_array(bias).copy()
            values[class_id] = -30.0
            bias.CopyFrom(numpy_helper.from_array(values.astype(np.float32), bias.name))
            changed += 1
    if changed != 3:
        raise ValueError(f"{source}: expected 3 class-branch convolutions, found {changed}")
    onnx.save(model, str(out))
    return out


def renamed_classes(out: pathlib.Path, names: dict[int, str], source: pathlib.Path = DEFAULT_MODEL) -> pathlib.Path:
    model = onnx.load(str(source))
    for prop in model.metadata_props:
        if prop.key == "names":
            prop.value = repr(names)
    onnx.save(model, str(out))
    return out


def timid_detector(out: pathlib.Path, shift: float, source: pathlib.Path = DEFAULT_MODEL) -> pathlib.Path:
    """The shipped FP32 detector with every class's score logit lowered by ``shift``: the same ranking (so about
    the same mAP50 on a held-out set), but confident detections fall into the triage's uncertain band."""
    model = onnx.load(str(source))
    initializers = {t.name: t for t in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and node.name.startswith(CLASS_BRANCH) and node.name.endswith(".2/Conv"):
            bias = initializers[node.input[2]]
            values = numpy_helper.to_array(bias).astype(np.float32) - np.float32(shift)
            bias.CopyFrom(numpy_helper.from_array(values, bias.name))
            changed += 1
    if changed != 3:
        raise ValueError(f"{source}: expected 3 class-branch convolutions, found {changed}")
    onnx.save(model, str(out))
    return out
