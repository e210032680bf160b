"""Static INT8 quantization of a prefilter model into a QDQ ONNX file.

One FP32 model and one calibration set give two INT8 flavours (shared perf
notes; api-facts §4.1, §4.4):

* ``cpu``: unsigned 8-bit activations, signed per-channel weights (U8S8). The
  fast one on x86 ONNX Runtime; ReLU and Clip fuse into the quantized convs.
* ``tensorrt``: signed symmetric activations and weights (S8S8), what TensorRT's
  explicit quantization accepts. Slower than FP32 on an x86 CPU: build an engine
  from it, do not run it on the CPU provider.

The decode at the end of the model stays FP32 (api-facts §4.2): a YOLOv8 head
concatenates boxes in input pixels (0..320) and class scores (0..1) into one
tensor, and one INT8 scale for both rounds every score to nothing. Which nodes
are "decode" is worked out from the graph (``decode_nodes``), not from names, so
any YOLOv8-layout export and classifiers with a trailing Softmax are covered.

``quantize_model`` does file I/O (it writes the INT8 model); ``decode_nodes``
and the flavour table are pure.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from agent.errors import ModelError

ProgressFn = Callable[[int, int], None]

# Nodes with weights: the decode walk stops at them (they are the network's last layers, quantized).
_PARAMETRIC = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
# Nodes that produce probabilities: a weighted node fed by one belongs to the decode (YOLOv8's DFL conv).
_PROBABILITY = {"Softmax", "Sigmoid", "LogSoftmax"}

METADATA_KEY = "edge_agent.quantization"


@dataclasses.dataclass(frozen=True)
class Flavour:
    name: str
    suffix: str  # file name suffix replacing ".onnx"
    activations: str  # "uint8" | "int8"
    symmetric_activations: bool
    runtime: str  # who it is for, in words

    def output_path(self, fp32: pathlib.Path) -> pathlib.Path:
        return fp32.with_name(fp32.stem + self.suffix)


FLAVOURS: dict[str, Flavour] = {
    "cpu": Flavour("cpu", ".int8.onnx", "uint8", False, "ONNX Runtime on the CPU (U8S8, per-channel weights)"),
    "tensorrt": Flavour("tensorrt", ".int8-trt.onnx", "int8", True,
                        "TensorRT explicit quantization (S8S8 symmetric, per-channel weights)"),
}


def _producers(graph: Any) -> dict[str, Any]:
    return {out: node for node in graph.node for out in node.output}


def _is_silu_sigmoid(node: Any, consumers: dict[str, list[Any]]) -> bool:
    """``x * Sigmoid(x)``: an activation (SiLU), not a probability."""
    if node.op_type != "Sigmoid":
        return False
    return any(c.op_type == "Mul" and node.input[0] in c.input for c in consumers.get(node.output[0], []))


def decode_nodes(model: Any) -> list[str]:
    """Names of the nodes that turn the network's last layers into the output: kept FP32.

    Walks back from every graph output through weightless nodes (reshapes,
    concats, splits, anchor arithmetic, softmax/sigmoid) and stops at weighted
    layers (Conv, Gemm, MatMul). A weighted layer fed by a probability
    (Softmax/Sigmoid that is not part of a SiLU) is itself decode — YOLOv8's DFL
    is a fixed 1x1 conv over a softmax — and the walk goes on through it.
    """
    graph = model.graph
    producers = _producers(graph)
    consumers: dict[str, list[Any]] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    def fed_by_probability(node: Any) -> bool:
        seen: set[str] = set()
        stack = [node.input[0]] if node.input else []
        while stack:
            name = stack.pop()
            src = producers.get(name)
            if src is None or src.name in seen:
                continue
            seen.add(src.name)
            if src.op_type in _PROBABILITY and not _is_silu_sigmoid(src, consumers):
                return True
            if src.op_type not in _PARAMETRIC:
                stack.extend(src.input)
        return False

    decode: dict[str, None] = {}
    stack = [o.name for o in graph.output]
    visited: set[str] = set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in visited:
            continue
        visited.add(node.name)
        if node.op_type in _PARAMETRIC and not fed_by_probability(node):
            continue
        decode[node.name] = None
        stack.extend(node.input)
    return list(decode)


class _Calibration:
    """Feeds preprocessed frames to ONNX Runtime's calibrator, reporting progress."""

    def __init__(self, input_name: str, tensors: Iterator[np.ndarray], total: int,
                 progress: ProgressFn | None) -> None:
        self._input_name = input_name
        self._tensors = tensors
        self._total = total
        self._done = 0
        self._progress = progress

    def get_next(self) -> dict[str, np.ndarray] | None:
        tensor = next(self._tensors, None)
        if tensor is None:
            return None
        self._done += 1
        if self._progress is not None:
            self._progress(self._done, self._total)
        return {self._input_name: np.ascontiguousarray(tensor, dtype=np.float32).copy()}

    def rewind(self) -> None:  # part of ORT's reader interface; one pass is all MinMax needs
        return None


def _reader(input_name: str, tensors: Iterator[np.ndarray], total: int, progress: ProgressFn | None) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Calibration, CalibrationDataReader):  # type: ignore[misc]
        pass

    return Reader(input_name, tensors, total, progress)


@dataclasses.dataclass(frozen=True)
class QuantizationReport:
    flavour: Flavour
    output: pathlib.Path
    calibration_frames: int
    excluded_nodes: tuple[str, ...]  # kept FP32
    quantized_ops: dict[str, int]  # op type -> count of nodes with quantized inputs
    metadata: dict[str, Any]


def check_fp32_onnx(path: pathlib.Path) -> Any:
    """Load ``path`` and check it is an ONNX model that is not quantized yet."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; expected an FP32 ONNX model")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"model file {path} is not an ONNX model ({str(exc).strip()[:160] or type(exc).__name__}); "
                         "expected an FP32 .onnx export") from exc
    if not model.graph.node or not model.graph.output:
        raise ModelError(f"model file {path} is not an ONNX model (no graph in it); expected an FP32 .onnx export")
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger"}:
        raise ModelError(f"model {path} is already quantized; quantize the FP32 model it came from")
    return model


def stem_convolutions(model: Any, count: int) -> list[str]:
    """Names of the first ``count`` convolutions in graph order (ONNX graphs are topologically sorted)."""
    names = [node.name for node in model.graph.node if node.op_type == "Conv"]
    if count and any(not name for name in names[:count]):
        raise ModelError("the model's first convolutions have no node names; expected named nodes "
                         "(every exporter names them) so that they can be kept in FP32")
    return names[:count]


def quantize_model(source: pathlib.Path, output: pathlib.Path, flavour: Flavour, input_name: str,
                   calibration: Iterable[np.ndarray], calibration_count: int, *, keep_decode_float: bool = True,
                   float_stem: int = 0, reduce_range: bool = False, progress: ProgressFn | None = None,
                   provenance: dict[str, Any] | None = None) -> QuantizationReport:
    """Quantize ``source`` (FP32 ONNX) to ``output`` (QDQ INT8) with MinMax calibration.

    ``calibration`` yields input tensors preprocessed exactly as at inference
    (the prefilter's own ``preprocess``). ``keep_decode_float=False`` quantizes
    the decode too — wrong on purpose, for proving that the accuracy gate
    catches it. ``float_stem`` leading convolutions stay FP32: they see the raw
    image, and one 8-bit scale for all their channels flattens the small contrasts
    faint defects are made of (measured on the shipped detector: all convolutions
    INT8 lost 3.8 mAP50 points, the first two kept FP32 lost none); an INT8
    convolution over 3 input channels is no faster on a CPU either.
    ``reduce_range`` (7-bit weights) is for U8S8 on AVX2/AVX-512 CPUs without VNNI,
    where the 8-bit product can saturate.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    check_fp32_onnx(source)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-agent-quant-") as tmp:
        prepared = pathlib.Path(tmp) / "prepared.onnx"
        # Folds and shape-infers once, so that calibration sees the graph that is quantized.
        # No symbolic shape inference: the models have static shapes, and it would need sympy.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        prepared_model = onnx.load(str(prepared))
        if float_stem < 0:
            raise ValueError(f"float_stem must be 0 or more, got {float_stem}")
        excluded = decode_nodes(prepared_model) if keep_decode_float else []
        stem = stem_convolutions(prepared_model, float_stem)
        excluded += [name for name in stem if name not in excluded]
        reader = _reader(input_name, iter(calibration), calibration_count, progress)
        _quantize_static(prepared, output, reader, flavour, excluded, reduce_range)
        if reader._done == 0:
            raise ModelError("calibration gave no frames; expected at least one calibration image")
    model = onnx.load(str(output))
    metadata = {
        "flavour": flavour.name,
        "format": "QDQ",
        "activations": flavour.activations + (" symmetric" if flavour.symmetric_activations else " asymmetric"),
        "weights": "int8 symmetric per-channel" + (" reduce_range (7 bit)" if reduce_range else ""),
        "calibration": {"method": "MinMax", "frames": reader._done},
        "decode_kept_float": keep_decode_float,
        "stem_kept_float": stem,
        "excluded_nodes": len(excluded),
        "source": (provenance or {}),
    }
    props = {p.key: p for p in model.metadata_props}
    if METADATA_KEY in props:
        props[METADATA_KEY].value = json.dumps(metadata)
    else:
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(model, str(output))
    return QuantizationReport(flavour=flavour, output=output, calibration_frames=reader._done,
                              excluded_nodes=tuple(excluded), quantized_ops=_quantized_ops(model), metadata=metadata)


def _quantize_static(prepared: pathlib.Path, output: pathlib.Path, reader: Any, flavour: Flavour,
                     excluded: list[str], reduce_range: bool) -> None:
    """ONNX Runtime's static QDQ quantization with MinMax ranges, per-channel symmetric INT8 weights."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    activation = QuantType.QUInt8 if flavour.activations == "uint8" else QuantType.QInt8
    quantize_static(
        str(prepared), str(output), reader,
        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
        activation_type=activation, weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
        extra_options={
            "ActivationSymmetric": flavour.symmetric_activations,
            "WeightSymmetric": True,
            # MinMax keeps two scalars per tensor and frame, so the whole set fits in memory. (Do not
            # set CalibMaxIntermediateOutputs: in ORT 1.31 it drops the collected ranges unmerged.)
        },
    )


def _quantized_ops(model: Any) -> dict[str, int]:
    """How many nodes of each operator type take a dequantized input (run in INT8)."""
    quantized: collections.Counter[str] = collections.Counter()
    producers = _producers(model.graph)
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any((p := producers.get(i)) is not None and p.op_type == "DequantizeLinear" for i in node.input):
            quantized[node.op_type] += 1
    return dict(quantized)


def read_quantization_metadata(meta: dict[str, str]) -> dict[str, Any] | None:
    """The ``edge_agent.quantization`` record written by ``quantize_model``, if any."""
    raw = meta.get(METADATA_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def flavours_from_option(option: str) -> Sequence[Flavour]:
    if option == "both":
        return [FLAVOURS["cpu"], FLAVOURS["tensorrt"]]
    if option not in FLAVOURS:
        raise ModelError(f"flavour {option!r}: expected cpu, tensorrt or both")
    return [FLAVOURS[option]]
