"""``edge-agent models info`` and ``edge-agent models eval``.

``info`` reads the ONNX graph itself (not an onnxruntime session), so it also
describes models the prefilter does not run (classifiers, NMS exports).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import sys
from typing import Any

import typer

from agent.errors import EdgeAgentError, ModelError
from agent.prefilter.model_info import file_digest, parse_metadata, read_sidecar

_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}


def gate_record_path(model: pathlib.Path) -> pathlib.Path:
    """``models/x.onnx`` -> ``models/x.gate.json``: where the INT8 gate records its verdict."""
    return model.with_suffix(".gate.json")


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    path: pathlib.Path
    model_id: str  # "<stem>@<first 12 hex of sha256>", as the prefilter reports it
    sha256: str
    file_bytes: int
    task: str  # from the metadata; "unknown" without metadata or sidecar
    names: tuple[str, ...]
    input_shape: tuple[int | str, ...]
    input_size: tuple[int, int] | None  # (width, height)
    output_shapes: tuple[tuple[int | str, ...], ...]
    precision: str  # fp32 | fp16 | int8
    opset: int | None
    metadata_source: str  # "onnx metadata" | "sidecar <file>" | "none"
    producer: str
    gate_record: pathlib.Path | None
    gate: dict[str, Any] | None  # the gate record's content
    gate_error: str | None  # why the gate record could not be read

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "model_id": self.model_id, "sha256": self.sha256, "file_bytes": self.file_bytes,
            "task": self.task, "classes": list(self.names), "input_shape": list(self.input_shape),
            "input_size": list(self.input_size) if self.input_size else None,
            "output_shapes": [list(s) for s in self.output_shapes], "precision": self.precision,
            "opset": self.opset, "metadata_source": self.metadata_source, "producer": self.producer,
            "gate_record": None if self.gate_record is None else {
                "path": str(self.gate_record), "content": self.gate, "error": self.gate_error},
        }


def _dims(value_info: Any) -> tuple[int | str, ...]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
    return tuple(dims)


def _precision(model: Any) -> str:
    import onnx

    ops = {n.op_type for n in model.graph.node}
    if ops & _INT8_OPS or any(op.startswith("QLinear") for op in ops):
        return "int8"
    half = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    if any(t.data_type in half for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def inspect_model(path: pathlib.Path) -> ModelSummary:
    """Describe an ONNX model file: task, classes, input, precision, opset, id, gate record."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist; expected an ONNX file "
                         "(the shipped demo model is models/conveyor-yolov8n.onnx)")
    if not path.is_file():
        raise ModelError(f"model path {path} is not a file; expected an ONNX file")
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"model file {path} is not an ONNX model ({str(exc).strip()[:200] or type(exc).__name__}); "
                         "expected a .onnx file (export with `yolo export format=onnx`)") from exc
    if model.ir_version <= 0 or not model.graph.node or not model.graph.output:
        raise ModelError(f"model file {path} is not an ONNX model (no graph in it); expected a .onnx file "
                         "(export with `yolo export format=onnx`)")
    where = f"model {path}"
    meta = {p.key: p.value for p in model.metadata_props}
    parsed = parse_metadata(meta, where)
    source = "onnx metadata" if "names" in parsed else "none"
    if "names" not in parsed:
        side = read_sidecar(path)
        if side is not None:
            parsed, source = side
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    input_shape = _dims(inputs[0]) if inputs else ()
    size: tuple[int, int] | None = None
    if len(input_shape) == 4 and isinstance(input_shape[2], int) and isinstance(input_shape[3], int):
        size = (input_shape[3], input_shape[2])
    elif parsed.get("imgsz"):
        h, w = parsed["imgsz"]
        size = (w, h)
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    producer = " ".join(x for x in (model.producer_name, model.producer_version) if x)
    if meta.get("author", "").lower().startswith("ultralytics") and meta.get("version"):
        producer = f"ultralytics {meta['version']}" + (f" ({producer})" if producer else "")
    digest = file_digest(path)
    gate_path = gate_record_path(path)
    gate: dict[str, Any] | None = None
    gate_error: str | None = None
    if gate_path.exists():
        try:
            raw = json.loads(gate_path.read_text())
            if isinstance(raw, dict):
                gate = raw
            else:
                gate_error = "not a JSON object"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            gate_error = f"unreadable: {exc}"
    return ModelSummary(
        path=path, model_id=f"{path.stem}@{digest[:12]}", sha256=digest, file_bytes=path.stat().st_size,
        task=str(parsed.get("task", "unknown")), names=tuple(parsed.get("names", ())), input_shape=input_shape,
        input_size=size, output_shapes=tuple(_dims(o) for o in model.graph.output), precision=_precision(model),
        opset=opset, metadata_source=source, producer=producer or "unknown",
        gate_record=gate_path if gate_path.exists() else None, gate=gate, gate_error=gate_error,
    )


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _gate_summary(content: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in content.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={v}" for k, v in value.items() if not isinstance(v, dict | list))
            lines.append(f"  {key}: {inner}" if inner else f"  {key}: {{{len(value)} keys}}")
        elif isinstance(value, list):
            lines.append(f"  {key}: [{len(value)} items]")
        else:
            lines.append(f"  {key}: {value}")
    return lines


def show_info(model: pathlib.Path, as_json: bool) -> None:
    s = inspect_model(model)
    if as_json:
        typer.echo(json.dumps(s.as_json(), indent=1))
        return
    shape = "x".join(str(d) for d in s.input_shape)
    rows = [
        ("model", str(s.path)),
        ("model id", s.model_id),
        ("task", s.task),
        ("classes", f"{len(s.names)}: {', '.join(s.names)}" if s.names else "none known"),
        ("input", (f"{s.input_size[0]}x{s.input_size[1]}" if s.input_size else "dynamic") + f" (tensor {shape})"),
        ("outputs", "; ".join("x".join(str(d) for d in o) for o in s.output_shapes)),
        ("precision", s.precision),
        ("opset", str(s.opset) if s.opset is not None else "unknown"),
        ("file size", f"{_human_bytes(s.file_bytes)} ({s.file_bytes} bytes)"),
        ("sha256", s.sha256),
        ("metadata", s.metadata_source),
        ("producer", s.producer),
    ]
    for k, v in rows:
        typer.echo(f"{k + ':':<11} {v}")
    if s.gate_record is None:
        typer.echo(f"gate record: none ({gate_record_path(s.path).name} does not exist)")
    elif s.gate is None:
        typer.echo(f"gate record: {s.gate_record} ({s.gate_error})")
    else:
        typer.echo(f"gate record: {s.gate_record}")
        for line in _gate_summary(s.gate):
            typer.echo(line)


# -- eval ---------------------------------------------------------------------------------------------------


def run_eval(model: pathlib.Path, data: pathlib.Path, split: str, out: pathlib.Path | None, conf: float,
             iou: float) -> None:
    from agent.config.models import ModelConfig
    from agent.evaluation.dataset import evaluate_detector, read_yolo_dataset
    from agent.evaluation.report import EvalContext, write_detection_report
    from agent.prefilter.detector import YoloDetector

    if not 0.0 <= conf <= 1.0:
        raise EdgeAgentError(f"--conf {conf}: expected a confidence in 0..1 (ultralytics val uses 0.001)")
    if not 0.0 < iou <= 1.0:
        raise EdgeAgentError(f"--iou {iou}: expected an NMS IoU threshold in (0, 1] (ultralytics val uses 0.7)")
    max_det = 300
    detector = YoloDetector.from_file(model, ModelConfig(path=model, min_score=conf, iou_threshold=iou,
                                                         max_detections=max_det))
    info = detector.info
    dataset = read_yolo_dataset(data, split, names=info.names)
    for note in dataset.notes:
        typer.echo(f"note: {note}", err=True)
    out_dir = out if out is not None else pathlib.Path(f"eval-{model.stem}")
    started = datetime.datetime.now(datetime.timezone.utc)
    total = len(dataset.images)
    tty = sys.stderr.isatty()
    step = 1 if tty else max(1, total // 10)

    def progress(done: int, total: int) -> None:
        if done == total or done % step == 0:
            typer.echo(f"\reval: {done}/{total} images", nl=done == total or not tty, err=True)

    metrics = evaluate_detector(detector, dataset, info.names, progress)
    finished = datetime.datetime.now(datetime.timezone.utc)
    ctx = EvalContext(model_id=info.model_id, model_path=model.resolve(), dataset=dataset.source.resolve(),
                      split=split, min_score=conf, nms_iou=iou, max_detections=max_det, started=started,
                      finished=finished, input_size=(info.input_w, info.input_h))
    files = write_detection_report(out_dir, metrics, ctx)

    def f(v: float | None) -> str:
        return "    -" if v is None else f"{v:.3f}"

    width = max(len("class"), *(len(n) for n in info.names))
    typer.echo(f"{'class':<{width}}  objects  precision  recall     F1   AP50  AP50-95")
    for c in metrics.classes:
        typer.echo(f"{c.name:<{width}}  {c.gt_count:>7}  {f(c.precision):>9}  {f(c.recall):>6}  {f(c.f1):>5}  "
                   f"{f(c.ap50):>5}  {f(c.ap50_95):>7}")
    typer.echo(f"{'all':<{width}}  {dataset.object_count:>7}  {f(metrics.precision):>9}  {f(metrics.recall):>6}  "
               f"{f(metrics.f1):>5}  {f(metrics.map50):>5}  {f(metrics.map50_95):>7}")
    typer.echo(f"mAP50 {metrics.map50:.3f}  mAP50-95 {metrics.map50_95:.3f}  (model {info.model_id}, "
               f"{metrics.images} images, P/R at confidence {metrics.confidence:.3f})")
    if not metrics.evaluated:
        typer.echo(f"note: split '{split}' has no labelled objects; the metrics are all 0", err=True)
    typer.echo(f"report: {files.html}")
