"""Export a trained anomaly net to ONNX with the metadata the agent reads (agent.prefilter.anomaly), and set
its threshold afterwards (the threshold comes from the exported model's own scores on held-out good frames)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

MEAN = (0.5, 0.5, 0.5)  # (v / 255 - mean) / std: the net sees values in about -2..2
STD = (0.25, 0.25, 0.25)
OPSET = 17


def export_onnx(net: Any, path: pathlib.Path, height: int, width: int, extra: Mapping[str, str]) -> None:
    """Write ``net`` (an AnomalyNet) as an anomaly model: input ``images`` (1, 3, height, width), outputs
    ``anomaly_map`` and ``score``; metadata task, imgsz, resize, interpolation, mean, std, a provisional
    threshold 0.5, and ``extra``."""
    import onnx
    import torch

    from agent.tooling.training.anomaly.net import exported

    model = exported(net)
    dummy = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        torch.onnx.export(model, (dummy,), str(path), input_names=["images"], output_names=["anomaly_map", "score"],
                          opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(path))
    meta = {"task": "anomaly", "imgsz": repr([height, width]), "resize": "stretch", "interpolation": "area",
            "mean": repr(list(MEAN)), "std": repr(list(STD)), "threshold": "0.5", **extra}
    _set(proto, meta)
    onnx.save(proto, str(path))


def set_metadata(path: pathlib.Path, values: Mapping[str, str]) -> None:
    """Replace (or add) metadata keys of an ONNX file in place."""
    import onnx

    proto = onnx.load(str(path))
    _set(proto, values)
    onnx.save(proto, str(path))


def _set(proto: Any, values: Mapping[str, str]) -> None:
    props = {p.key: p for p in proto.metadata_props}
    for key, value in values.items():
        if key in props:
            props[key].value = value
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value


def model_scores(path: pathlib.Path, frames: Sequence[Any], threads: int) -> list[float]:
    """The model's raw scores for ``frames`` (BGR uint8), run by the agent's own runtime."""
    from agent.config.models import ModelConfig
    from agent.prefilter.anomaly import AnomalyModel
    from agent.prefilter.factory import open_prefilter

    model = open_prefilter(path, ModelConfig(path=path, intra_op_threads=threads))
    if not isinstance(model, AnomalyModel):
        raise TypeError(f"{path} did not open as an anomaly model")
    out = []
    for frame in frames:
        tensor, _plan = model.preprocess(frame)
        _amap, score = model.forward(tensor)
        out.append(float(score.reshape(-1)[0]))
    return out
