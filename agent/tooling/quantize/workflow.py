"""``edge-agent models quantize``: FP32 ONNX -> INT8 QDQ ONNX, behind an accuracy gate.

1. check the calibration frames (all of them, before anything slow starts);
2. evaluate the FP32 model on the labelled validation set (metric + per-image verdicts);
3. for each flavour (cpu, tensorrt): calibrate and quantize into a temporary
   file, evaluate it on the same images, judge it (``agent.tooling.evaluation.gate``);
   only a model that passes is moved into place, with its gate record
   ``<model>.gate.json``; a refused one is deleted and the command exits 1;
4. write the numbers into the FP32 model's card (``models/<name>.md``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, Literal

import typer

from agent.config.models import ModelConfig, TriageConfig
from agent.core.detections import PrefilterResult
from agent.errors import EdgeAgentError
from agent.prefilter.anomaly import AnomalyModel
from agent.prefilter.classifier import ImageClassifier
from agent.prefilter.factory import open_prefilter
from agent.prefilter.gate_record import gate_record_path
from agent.prefilter.model_info import file_digest
from agent.tooling.evaluation.gate import GATE_SCHEMA, GateLimits, GateResult, judge
from agent.tooling.quantize import calibration
from agent.tooling.quantize.int8 import (
    Flavour,
    QuantizationReport,
    check_fp32_onnx,
    flavours_from_option,
    quantize_model,
)
from agent.triage.policy import decide

CARD_BEGIN = "<!-- int8-gate:begin (written by `edge-agent models quantize`) -->"
CARD_END = "<!-- int8-gate:end -->"
# ultralytics val settings: every prediction down to 0.001 counts for mAP; triage only looks above `reject`.
_EVAL_MIN_SCORE = 0.001
_EVAL_MAX_DET = 300


def progress_printer(label: str) -> Callable[[int, int], None]:
    """A progress line on stderr: rewritten in place on a terminal, every 10 % otherwise."""
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        step = 1 if tty else max(1, total // 10)
        if done == total or done % step == 0:
            typer.echo(f"\r{label}: {done}/{total}", nl=done == total or not tty, err=True)
    return show


@dataclasses.dataclass(frozen=True)
class Evaluation:
    model_id: str
    metric: str
    value: float
    per_class: dict[str, float | None]
    per_class_metric: str  # what per_class holds: AP50 (detector) or F1 (classifier)
    verdicts: tuple[str, ...]
    latency_p50_ms: float


def evaluate_model(path: pathlib.Path, dataset: Any, band: TriageConfig, threads: int, label: str,
                   runtime: Literal["onnxruntime", "openvino"] = "onnxruntime",
                   precision: Literal["auto", "bf16"] = "auto") -> Evaluation:
    """Run one model over the validation set on ``runtime`` (``precision`` bf16: OpenVINO's float layers in
    BF16, scripts/bench_precision.py): its task metric, per-class numbers, per-image verdicts."""
    from agent.runtime.loop import latency_percentiles
    from agent.tooling.evaluation.classify_dataset import evaluate_classifier
    from agent.tooling.evaluation.dataset import evaluate_detector

    model = open_prefilter(path, ModelConfig(path=path, min_score=_EVAL_MIN_SCORE, iou_threshold=0.7,
                                             max_detections=_EVAL_MAX_DET, intra_op_threads=threads,
                                             runtime=runtime, precision=precision))
    verdicts: list[str] = []
    latencies: list[float] = []

    def record(_item: Any, result: PrefilterResult) -> None:
        verdicts.append(decide(result, band).verdict)
        latencies.append(result.latency_ms)

    def p50() -> float:
        return latency_percentiles(latencies)[0]

    if isinstance(model, AnomalyModel):
        from agent.tooling.evaluation.anomaly_dataset import evaluate_anomaly

        ev = evaluate_anomaly(model, dataset, band, progress_printer(label))
        return Evaluation(model_id=model.info.model_id, metric="image AUROC", value=ev.image_auroc or 0.0,
                          per_class={}, per_class_metric="-", verdicts=ev.verdicts,
                          latency_p50_ms=latency_percentiles(list(ev.latencies_ms))[0])
    if isinstance(model, ImageClassifier):
        cm = evaluate_classifier(model, dataset, progress_printer(label), record)
        return Evaluation(model_id=model.info.model_id, metric="accuracy", value=cm.accuracy,
                          per_class={c.name: c.f1 for c in cm.classes}, per_class_metric="F1",
                          verdicts=tuple(verdicts), latency_p50_ms=p50())
    dm = evaluate_detector(model, dataset, model.info.names, progress_printer(label), record)
    return Evaluation(model_id=model.info.model_id, metric="mAP50", value=dm.map50,
                      per_class={c.name: c.ap50 for c in dm.classes}, per_class_metric="AP50",
                      verdicts=tuple(verdicts), latency_p50_ms=p50())


def _validation_set(opts: QuantizeOptions, task: str, names: Sequence[str], workdir: pathlib.Path) -> tuple[Any, str]:
    from agent.tooling.dataset.synth import write_classify_dataset, write_synthetic_dataset
    from agent.tooling.evaluation.classify_dataset import read_classify_dataset
    from agent.tooling.evaluation.dataset import read_yolo_dataset

    if opts.val == calibration.SYNTHETIC and task == "anomaly":
        raise EdgeAgentError("--val synthetic: an anomaly model's gate needs a labelled YOLO-layout set (an image "
                             "without boxes is good; `edge-agent dataset synth --scene NAME` writes one)")
    if opts.val == calibration.SYNTHETIC:
        root = workdir / "val"
        seed, count = opts.synthetic_seed, opts.val_count
        # the held-out split of a model trained by scripts/train_*.py --seed SEED (its val stream is SEED+1)
        desc = f"synthetic held-out split (training seed {seed}, {count} images)"
        if task == "classify":
            write_classify_dataset(root, 1, count, seed=seed)
            return read_classify_dataset(root, "val", names=names), desc
        write_synthetic_dataset(root, 1, count, seed=seed)
        return read_yolo_dataset(root, "val", names=names), desc
    path = pathlib.Path(opts.val)
    if task == "anomaly":  # a YOLO layout: an image without boxes is good, one with any box defective
        return read_yolo_dataset(path, opts.val_split), f"{path} ({opts.val_split})"
    if task == "classify":
        return read_classify_dataset(path, opts.val_split, names=names), f"{path} ({opts.val_split})"
    return read_yolo_dataset(path, opts.val_split, names=names), f"{path} ({opts.val_split})"


def _card_section(source: pathlib.Path, rows: list[dict[str, Any]], refused: list[str]) -> str:
    stem = rows[0]["quantization"].get("stem_kept_float") or []
    kept = (f"; the first {len(stem)} convolution{'s' if len(stem) != 1 else ''} (" + ", ".join(f"`{n}`" for n in stem)
            + ") and" if stem else "; ")
    lines = [CARD_BEGIN, "## INT8 (accuracy-gated)", "",
             "Made with `edge-agent models quantize` (static QDQ, MinMax calibration, per-channel weights"
             f"{kept} the decode after the last convolutions stay FP32). Each INT8 file is published only when "
             "it passes the gate; its record is `<file>.gate.json`.", "",
             "| file | for | metric FP32 → INT8 | change | verdicts changed | eval p50 FP32 → INT8 |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        g = r["gate"]
        lines.append(f"| `{r['file']}` | {r['runtime']} | {g['metric']} {g['fp32']:.3f} → {g['int8']:.3f} | "
                     f"{-g['drop_points']:+.2f} pts | {g['verdicts']['changed']}/{g['verdicts']['images']} "
                     f"({g['verdicts']['changed_pct']:.1f} %) | {r['latency_ms_p50']['fp32']:.1f} → "
                     f"{r['latency_ms_p50']['int8']:.1f} ms |")
    first = rows[0]
    band = first["validation"]["band"]
    lines += [f"| — | {r} | | | | |" for r in refused]
    lines += ["", f"Validation: {first['validation']['data']}; triage band accept {band['accept']}"
              f" / reject {band['reject']}. Calibration: {first['calibration']['source']}. "
              f"Gate limits: {first['gate']['limits']['max_drop_points']} points, "
              f"{first['gate']['limits']['max_verdict_change_pct']} % of verdicts. Eval latencies are one "
              "sequential pass each (pre- and post-processing included); for throughput ratios use "
              "`python scripts/bench_prefilter.py`.", "", "Reproduce:", "",
              f"    {first['command']}", CARD_END]
    return "\n".join(lines)


def update_model_card(card: pathlib.Path, section: str) -> bool:
    """Replace (or append) the INT8 section of a model card. False when there is no card."""
    if not card.exists():
        return False
    text = card.read_text()
    pattern = re.compile(re.escape(CARD_BEGIN) + ".*?" + re.escape(CARD_END), re.S)
    text = pattern.sub(lambda _m: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    card.write_text(text if text.endswith("\n") else text + "\n")
    return True


@dataclasses.dataclass(frozen=True)
class QuantizeOptions:
    model: pathlib.Path
    calib: str
    calib_count: int
    calib_seed: int
    val: str
    val_split: str
    synthetic_seed: int
    val_count: int
    flavour: str
    out_dir: pathlib.Path | None
    limits: GateLimits
    reduce_range: bool
    threads: int
    band: TriageConfig
    command: str
    break_decode: bool = False  # quantize the decode as well: the broken model the gate must refuse
    float_stem: int = 0  # leading convolutions kept FP32


def _gate_record(opts: QuantizeOptions, flavour: Flavour, output: pathlib.Path, report: QuantizationReport,
                 fp32: Evaluation, int8: Evaluation, result: GateResult, val_desc: str,
                 calib: calibration.CalibrationSet) -> dict[str, Any]:
    import onnx
    import onnxruntime

    return {
        "schema": GATE_SCHEMA,
        "created_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "file": output.name,
        "runtime": flavour.runtime,
        "model": {"file": output.name, "sha256": file_digest(output), "model_id": int8.model_id,
                  "flavour": flavour.name},
        "source_model": {"file": opts.model.name, "sha256": file_digest(opts.model), "model_id": fp32.model_id},
        "gate": result.as_json(),
        "per_class": {"metric": fp32.per_class_metric,
                      "classes": {name: {"fp32": fp32.per_class.get(name), "int8": int8.per_class.get(name)}
                                  for name in fp32.per_class}},
        "validation": {"data": val_desc, "images": result.images,
                       "band": {"accept": opts.band.accept, "reject": opts.band.reject}},
        "calibration": {"source": calib.description, "frames": report.calibration_frames, "method": "MinMax",
                        "frame_size": list(calib.frame_size)},
        "quantization": report.metadata,
        "latency_ms_p50": {"fp32": round(fp32.latency_p50_ms, 2), "int8": round(int8.latency_p50_ms, 2),
                           "threads": opts.threads},
        "tools": {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
        "command": opts.command,
    }


def _calibration(opts: QuantizeOptions) -> calibration.CalibrationSet:
    """The calibration frames ``--calib`` names (a note when they are few)."""
    if opts.calib == calibration.SYNTHETIC:
        calib = calibration.synthetic(opts.calib_count, opts.calib_seed)
    else:
        calib = calibration.from_folder(pathlib.Path(opts.calib), opts.calib_count)
    if calib.count < 100:
        typer.echo(f"note: {calib.count} calibration frames; 300 or more give steadier ranges", err=True)
    return calib


def _say_refused(opts: QuantizeOptions, flavour: Flavour, target: pathlib.Path, result: GateResult) -> None:
    if opts.float_stem == 0 and not opts.break_decode:
        typer.echo("hint: --float-stem 2 keeps the first two convolutions in FP32; they see the raw "
                   "image, and quantizing them is what costs a YOLOv8 its faint defects", err=True)
    typer.echo(f"REFUSED {flavour.name} ({flavour.runtime}): " + "; ".join(result.reasons)
               + f". Nothing written to {target}. ({result.summary()})", err=True)


def run_quantize(opts: QuantizeOptions) -> int:
    """Returns the exit code: 0 when every flavour passed its gate, 1 when one was refused."""
    model = opts.model
    check_fp32_onnx(model)
    fp32_model = open_prefilter(model, ModelConfig(path=model, intra_op_threads=opts.threads))
    info = fp32_model.info
    calib = _calibration(opts)
    flavours = flavours_from_option(opts.flavour)
    out_dir = opts.out_dir or model.parent
    refused = 0
    refusals: list[str] = []
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edge-agent-quantize-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        dataset, val_desc = _validation_set(opts, info.task, info.names, tmp)
        if not dataset.images:
            raise EdgeAgentError(f"validation set {val_desc} has no images; the gate needs labelled images")
        typer.echo(f"model {info.model_id} ({info.task}): {len(info.names)} classes, "
                   f"input {info.input_w}x{info.input_h}; "
                   f"calibration: {calib.description}; validation: {val_desc}", err=True)
        fp32 = evaluate_model(model, dataset, opts.band, opts.threads, "evaluate FP32")

        def tensors() -> Any:
            for frame in calib.frames():
                tensor, _plan = fp32_model.preprocess(frame)
                yield tensor.copy()

        for flavour in flavours:
            target = out_dir / (model.stem + flavour.suffix)
            staged = tmp / target.name
            report = quantize_model(model, staged, flavour, info.input_name, tensors(), calib.count,
                                    reduce_range=opts.reduce_range, keep_decode_float=not opts.break_decode,
                                    float_stem=opts.float_stem,
                                    progress=progress_printer(f"calibrate {flavour.name}"),
                                    provenance={"file": model.name, "sha256": file_digest(model)})
            int8 = evaluate_model(staged, dataset, opts.band, opts.threads, f"evaluate INT8 {flavour.name}")
            result = judge(fp32.metric, fp32.value, int8.value, fp32.verdicts, int8.verdicts, opts.limits)
            if not result.passed:
                refused += 1
                refusals.append(f"{flavour.runtime}: **refused by the gate** ({result.summary()}); no file")
                _say_refused(opts, flavour, target, result)
                continue
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staged), target)
            record = _gate_record(opts, flavour, target, report, fp32, int8, result, val_desc, calib)
            gate_record_path(target).write_text(json.dumps(record, indent=1) + "\n")
            rows.append(record)
            typer.echo(f"passed {flavour.name}: {target} ({result.summary()}; "
                       f"eval p50 {fp32.latency_p50_ms:.1f} -> {int8.latency_p50_ms:.1f} ms)")
    if rows and out_dir.resolve() == model.parent.resolve():  # the card describes the files next to it
        card = model.with_suffix(".md")
        if update_model_card(card, _card_section(model, rows, refusals)):
            typer.echo(f"model card: {card} (INT8 section)")
    return 1 if refused else 0


