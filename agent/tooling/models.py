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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from agent.errors import EdgeAgentError, ModelError
from agent.prefilter.gate_record import check_gate, gate_record_path, graph_precision, read_gate_record
from agent.prefilter.model_info import file_digest, parse_metadata, read_sidecar
from agent.tooling.quantize.int8 import read_quantization_metadata

if TYPE_CHECKING:
    from agent.prefilter.anomaly import AnomalyModel
    from agent.prefilter.classifier import ImageClassifier


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
    gate_state: str  # passed | failed | missing | stale | unreadable | not_int8 (agent.prefilter.gate_record)
    gate_detail: str
    quantization: dict[str, Any] | None  # what `models quantize` wrote into the metadata
    threshold: float | None = None  # anomaly models: the score threshold in the metadata

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "model_id": self.model_id, "sha256": self.sha256, "file_bytes": self.file_bytes,
            "task": self.task, "classes": list(self.names), "input_shape": list(self.input_shape),
            "threshold": self.threshold,
            "input_size": list(self.input_size) if self.input_size else None,
            "output_shapes": [list(s) for s in self.output_shapes], "precision": self.precision,
            "opset": self.opset, "metadata_source": self.metadata_source, "producer": self.producer,
            "gate_record": None if self.gate_record is None else {
                "path": str(self.gate_record), "content": self.gate, "error": self.gate_error},
            "gate": {"state": self.gate_state, "detail": self.gate_detail},
            "quantization": self.quantization,
        }


def _dims(value_info: Any) -> tuple[int | str, ...]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
    return tuple(dims)


def inspect_model(path: pathlib.Path) -> ModelSummary:
    """Describe an ONNX model file: task, classes, input, precision, opset, id, gate record."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist; expected an ONNX file "
                         "(the shipped demo model is models/conveyor-yolov8n.int8.onnx)")
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
    if parsed.get("task") == "anomaly":  # one kind of finding; its threshold is the model's own
        parsed.setdefault("names", ("anomaly",))
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
    gate, gate_error = read_gate_record(path)
    precision = graph_precision(model)
    status = check_gate(path, digest, precision)
    return ModelSummary(
        path=path, model_id=f"{path.stem}@{digest[:12]}", sha256=digest, file_bytes=path.stat().st_size,
        task=str(parsed.get("task", "unknown")), names=tuple(parsed.get("names", ())), input_shape=input_shape,
        input_size=size, output_shapes=tuple(_dims(o) for o in model.graph.output), precision=precision,
        opset=opset, metadata_source=source, producer=producer or "unknown",
        gate_record=gate_path if gate_path.exists() else None, gate=gate, gate_error=gate_error,
        gate_state=status.state, gate_detail=status.detail, quantization=read_quantization_metadata(meta),
        threshold=parsed.get("threshold"),
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
        ("task", s.task + (f" (threshold {s.threshold:g})" if s.threshold is not None else "")),
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
    if s.quantization is not None:
        q = s.quantization
        rows.append(("quantized", f"{q.get('flavour')} flavour, {q.get('format')}, activations {q.get('activations')}, "
                                  f"weights {q.get('weights')}, calibration {q.get('calibration')}"))
    for k, v in rows:
        typer.echo(f"{k + ':':<11} {v}")
    if s.precision == "int8" or s.gate_record is not None:
        typer.echo(f"{'gate:':<11} {s.gate_state} — {s.gate_detail}")
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
    from agent.prefilter.anomaly import AnomalyModel
    from agent.prefilter.classifier import ImageClassifier
    from agent.prefilter.factory import open_prefilter
    from agent.tooling.evaluation.dataset import evaluate_detector, read_yolo_dataset
    from agent.tooling.evaluation.report import EvalContext, write_detection_report

    if not 0.0 <= conf <= 1.0:
        raise EdgeAgentError(f"--conf {conf}: expected a confidence in 0..1 (ultralytics val uses 0.001)")
    if not 0.0 < iou <= 1.0:
        raise EdgeAgentError(f"--iou {iou}: expected an NMS IoU threshold in (0, 1] (ultralytics val uses 0.7)")
    max_det = 300
    detector = open_prefilter(model, ModelConfig(path=model, min_score=conf, iou_threshold=iou,
                                                 max_detections=max_det))
    if isinstance(detector, ImageClassifier):  # --conf and --iou do not apply
        run_classifier_eval(detector, model, data, split, out)
        return
    if isinstance(detector, AnomalyModel):
        run_anomaly_eval(detector, model, data, split, out)
        return
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


def _progress(total: int) -> Callable[[int, int], None]:
    tty = sys.stderr.isatty()
    step = 1 if tty else max(1, total // 10)

    def progress(done: int, total: int) -> None:
        if done == total or done % step == 0:
            typer.echo(f"\reval: {done}/{total} images", nl=done == total or not tty, err=True)

    return progress


def run_anomaly_eval(model: AnomalyModel, path: pathlib.Path, data: pathlib.Path, split: str,
                     out: pathlib.Path | None) -> None:
    """``models eval`` for an anomaly model: image and pixel AUROC, the numbers at the model's threshold and at 1 %
    false rejects, the score histogram; eval.json + report.txt (the report also on stdout)."""
    from agent.tooling.evaluation.anomaly_dataset import evaluate_anomaly
    from agent.tooling.evaluation.anomaly_report import (
        anomaly_eval_document,
        anomaly_report_lines,
        write_anomaly_report,
    )
    from agent.tooling.evaluation.dataset import read_yolo_dataset

    dataset = read_yolo_dataset(data, split)
    ev = evaluate_anomaly(model, dataset, progress=_progress(len(dataset.images)))
    doc = anomaly_eval_document(ev, model.info.model_id, str(data), split)
    files = write_anomaly_report(out if out is not None else pathlib.Path(f"eval-{path.stem}"), doc)
    for line in anomaly_report_lines(doc):
        typer.echo(line)
    typer.echo("report: " + ", ".join(map(str, files)))


def run_classifier_eval(classifier: ImageClassifier, model: pathlib.Path, data: pathlib.Path, split: str,
                        out: pathlib.Path | None) -> None:
    """``models eval`` for a classifier: accuracy, macro F1, per-class P/R/F1, confusion matrix, and what the
    default triage band makes of it; eval.json + report.html."""
    import statistics

    from agent.config.models import TriageConfig
    from agent.core.detections import PrefilterResult
    from agent.tooling.evaluation.classify_dataset import (
        ClassifiedImage,
        evaluate_classifier,
        read_classify_dataset,
        triage_summary,
    )
    from agent.tooling.evaluation.classify_report import ClassifyEvalContext, write_classification_report

    info = classifier.info
    dataset = read_classify_dataset(data, split, names=info.names)
    out_dir = out if out is not None else pathlib.Path(f"eval-{model.stem}")
    seen: list[tuple[str, PrefilterResult]] = []

    def keep(item: ClassifiedImage, result: PrefilterResult) -> None:
        seen.append((dataset.names[item.class_id], result))

    started = datetime.datetime.now(datetime.timezone.utc)
    metrics = evaluate_classifier(classifier, dataset, _progress(len(dataset.images)), on_result=keep)
    finished = datetime.datetime.now(datetime.timezone.utc)
    band = TriageConfig()
    summary = triage_summary(seen, band)
    prep = info.classifier_input
    preprocessing: dict[str, Any] = {} if prep is None else {
        "resize": prep.resize, "interpolation": prep.interpolation, "mean": list(prep.normalisation.mean),
        "std": list(prep.normalisation.std), "output": prep.output}
    latency = statistics.median(r.latency_ms for _, r in seen)
    ctx = ClassifyEvalContext(model_id=info.model_id, model_path=model.resolve(), dataset=dataset.source.resolve(),
                              split=split, started=started, finished=finished, input_size=(info.input_w, info.input_h),
                              preprocessing=preprocessing, triage=summary, latency_p50_ms=latency)
    files = write_classification_report(out_dir, metrics, ctx)
    width = max(len("class"), *(len(n) for n in info.names))
    typer.echo(f"{'class':<{width}}  frames  predicted  precision  recall     F1")
    for c in metrics.classes:
        typer.echo(f"{c.name:<{width}}  {c.support:>6}  {c.predicted:>9}  {c.precision:>9.3f}  {c.recall:>6.3f}  "
                   f"{c.f1:>5.3f}")
    typer.echo(f"{'all':<{width}}  {metrics.samples:>6}  {metrics.samples:>9}  {metrics.macro_precision:>9.3f}  "
               f"{metrics.macro_recall:>6.3f}  {metrics.macro_f1:>5.3f}")
    typer.echo(f"accuracy {metrics.accuracy:.3f}  macro F1 {metrics.macro_f1:.3f}  (model {info.model_id}, "
               f"{metrics.samples} images, {latency:.1f} ms per frame p50)")
    acc = "-" if summary.decided_accuracy is None else f"{summary.decided_accuracy:.3f}"
    typer.echo(f"triage at accept {band.accept:g}, margin {band.margin:g}: {summary.decided}/{summary.frames} decided "
               f"({100 * summary.coverage:.1f}%), {acc} of them right, {summary.defects_passed} defect frames passed; "
               f"{summary.uncertain} uncertain")
    typer.echo(f"report: {files.html}")
