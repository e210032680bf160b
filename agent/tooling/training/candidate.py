"""``edge-agent models train``: check, fine-tune, export, INT8 gate, model card -> a candidate folder.

Order (every check before anything slow):

1. the output folder (missing or empty, or ``--overwrite``); the dataset: layout and every label line
   (``data``); the base model: a detector or classifier the agent runs, of the dataset's task and with
   its classes (``base``); the train extra installed (``extras``);
2. fine-tune in a temporary work folder (``detector`` / ``classifier``), one line per epoch;
3. write the candidate::

       OUT/<name>.onnx              FP32, the trained model
       OUT/<name>.int8.onnx         INT8 (cpu flavour), only when it passed the accuracy gate
       OUT/<name>.int8.gate.json    the gate's record
       OUT/<name>.md                model card: base, data, settings, per-epoch progress, metrics
       OUT/candidate.json           the same as data, for ``edge-agent models promote``

   where ``<name>`` is the base model's (``conveyor-yolov8n`` for ``conveyor-yolov8n.int8.onnx``), or
   with new classes the dataset folder's before it (``surface-conveyor-yolov8n``; ``newclasses``);
4. the INT8 quantization and gate (``agent.tooling.quantize.workflow.run_quantize``) with the shipped models'
   settings: flavour cpu, ``--float-stem 2`` for the detector, calibration on the training images,
   the gate's validation set = the dataset's val split.

Returns exit code 0, or 1 when the gate refused the INT8 model (the FP32 candidate is still written).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from agent.config.models import ModelConfig, TriageConfig
from agent.core.detections import PrefilterResult
from agent.errors import EdgeAgentError
from agent.prefilter.classifier import ImageClassifier
from agent.prefilter.factory import open_prefilter
from agent.prefilter.model_info import file_digest
from agent.tooling.training.base import BaseModel, inspect_base
from agent.tooling.training.card import Score, candidate_card, read_earlier_training
from agent.tooling.training.data import TrainingData, check_training_data, task_matches
from agent.tooling.training.extras import require_train_extra
from agent.tooling.training.newclasses import candidate_name, check_classes, check_taxonomy, check_time, dataset_imgsz
from agent.tooling.training.progress import EpochRow
from agent.tooling.training.trained import TrainedModel
from agent.triage.policy import decide

CANDIDATE_SCHEMA = "edge-agent/candidate/v1"
CALIBRATION_FRAMES = 300
DETECTOR_FLOAT_STEM = 2  # as the shipped detector's INT8 (models/conveyor-yolov8n.int8.gate.json)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    data: pathlib.Path
    base: pathlib.Path
    out: pathlib.Path
    epochs: int
    imgsz: tuple[int, ...] | None  # detector: one side; classifier: (height, width)
    lr0: float | None  # None: the task's default
    batch: int
    threads: int
    seed: int
    quantize: bool
    overwrite: bool
    verbose: bool
    command: str
    export_epoch: str = "best"  # detector: best (val fitness) or last; the classifier exports its last
    new_classes: bool = False  # a new head for the dataset's classes on the base's backbone
    time_h: float | None = None  # training budget in hours (instead of --epochs), like ultralytics' time=
    taxonomy: pathlib.Path | None = None  # the plant's taxonomy: the dataset's classes must be in it


@dataclasses.dataclass(frozen=True)
class Plan:
    """The checked inputs and what the run makes of them."""

    data: TrainingData
    base: BaseModel
    new_head: bool  # the class outputs start afresh (new classes, or a yaml base: from scratch)
    name: str  # the candidate's file names: OUT/<name>.onnx ...
    imgsz: tuple[int, ...] | None  # None: the base model's

    @property
    def names(self) -> tuple[str, ...]:
        return self.data.names if self.new_head or self.base.kind != "onnx" else self.base.names


def check_out_folder(out: pathlib.Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise EdgeAgentError(f"--out {out} is a file; expected a new or empty folder for the candidate")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise EdgeAgentError(f"--out {out} exists and is not empty; choose a new folder, or give --overwrite to "
                             "replace what is in it")


def check_inputs(opts: TrainOptions) -> Plan:
    """Everything about the command's inputs that can be checked without torch."""
    if opts.export_epoch not in ("best", "last"):
        raise EdgeAgentError(f"--export-epoch {opts.export_epoch!r}: expected best or last")
    check_time(opts.time_h)
    check_out_folder(opts.out, opts.overwrite)
    data = check_training_data(opts.data)
    base = inspect_base(opts.base)
    task_matches(data, base.task, base.path)
    check_taxonomy(data, opts.taxonomy)
    new_head = check_classes(data, base, opts.new_classes)
    if opts.imgsz is not None and len(opts.imgsz) != (1 if base.task == "detect" else 2):
        raise EdgeAgentError(f"--imgsz {'x'.join(map(str, opts.imgsz))}: a "
                             + ("detector trains on square images: give one size, e.g. --imgsz 320"
                                if base.task == "detect" else "classifier input is height x width, e.g. "
                                "--imgsz 192x256"))
    imgsz = opts.imgsz
    if imgsz is None and base.task == "detect" and (new_head or base.kind != "onnx"):
        imgsz = (dataset_imgsz(data),)  # new classes: the dataset's own image size suits its (small) defects
    return Plan(data=data, base=base, new_head=new_head, name=candidate_name(data, base, new_head), imgsz=imgsz)


def check_architecture(base: BaseModel) -> str:
    """What the base network is, read from its graph (onnx, no torch); ModelError when it is not one we can
    train: a YOLOv8-layout detector, or the frame classifier's ResNet-18 layout."""
    if base.kind == "yaml":
        return f"{base.path.name} (ultralytics model yaml, from scratch)"
    if base.kind == "checkpoint":
        return f"{base.path.name} (ultralytics checkpoint)"
    if base.task == "detect":
        from agent.tooling.training.yolo_arch import read_yolo_architecture

        scale, activation = read_yolo_architecture(base.path)
        return f"YOLOv8{scale} ({activation})"
    from agent.tooling.training.onnx_to_resnet import read_resnet_graph

    graph = read_resnet_graph(base.path)
    return f"ResNet-18 layout, width {graph.width}"


def score_on_val(model_path: pathlib.Path, data: TrainingData, threads: int) -> Score:
    """``model_path`` on the dataset's val split, through the agent's runtime (evaluation settings of
    ultralytics val for a detector: every box down to 0.001 counts for mAP)."""
    from agent.tooling.evaluation.classify_dataset import evaluate_classifier, read_classify_dataset
    from agent.tooling.evaluation.dataset import evaluate_detector, read_yolo_dataset

    model = open_prefilter(model_path, ModelConfig(path=model_path, min_score=0.001, iou_threshold=0.7,
                                                   max_detections=300, intra_op_threads=threads))
    band = TriageConfig()  # triage looks only above band.reject, so the low-score boxes mAP needs do not matter
    verdicts: list[str] = []

    def triage(_item: Any, result: PrefilterResult) -> None:
        verdicts.append(decide(result, band).verdict)

    if isinstance(model, ImageClassifier):
        cm = evaluate_classifier(model, read_classify_dataset(data.source, "val", names=model.info.names),
                                 on_result=triage)
        return Score("accuracy", cm.accuracy, {c.name: {"support": c.support, "precision": c.precision,
                                                        "recall": c.recall, "score": c.f1} for c in cm.classes}, "F1",
                     uncertain=verdicts.count("uncertain") / max(1, len(verdicts)))
    dm = evaluate_detector(model, read_yolo_dataset(data.source, "val", names=model.info.names), model.info.names,
                           on_result=triage)
    return Score("mAP50", dm.map50, {c.name: {"support": c.gt_count, "precision": c.precision, "recall": c.recall,
                                              "score": c.ap50} for c in dm.classes}, "AP50",
                 uncertain=verdicts.count("uncertain") / max(1, len(verdicts)))


def _calibration_folder(data: TrainingData, linked: pathlib.Path) -> pathlib.Path:
    """The folder of the training images when it holds nothing else (a clear record), else the work
    folder's links to them."""
    from agent.tooling.quantize.calibration import IMAGE_SUFFIXES

    common = pathlib.Path(os.path.commonpath([str(p.parent) for p in data.train]))
    train = {p.resolve() for p in data.train}
    inside = {p.resolve() for p in common.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    return common if inside == train else linked


def _stamp_metadata(path: pathlib.Path, record: dict[str, Any]) -> None:
    """The candidate's provenance in the ONNX metadata (key edge_agent.training), beside ultralytics' keys."""
    import onnx

    model = onnx.load(str(path))
    entries = [p for p in model.metadata_props if p.key != "edge_agent.training"]
    del model.metadata_props[:]
    model.metadata_props.extend(entries)
    model.metadata_props.append(onnx.StringStringEntryProto(key="edge_agent.training", value=json.dumps(record)))
    onnx.save(model, str(path))


def _train(opts: TrainOptions, plan: Plan, work: pathlib.Path, say: Callable[[str], None],
           on_epoch: Callable[[EpochRow], None]) -> tuple[TrainedModel, pathlib.Path]:
    """Train in ``work``; the trained model and the folder of calibration frames for the INT8 step."""
    data, base, imgsz = plan.data, plan.base, plan.imgsz
    if base.task == "detect":
        from agent.tooling.training.detector import DetectorSettings, finetune_detector

        lr0 = DetectorSettings.lr0 if not plan.new_head else DetectorSettings.new_head_lr0
        settings = DetectorSettings(epochs=opts.epochs, imgsz=imgsz[0] if imgsz else None, batch=opts.batch,
                                    seed=opts.seed, threads=opts.threads, verbose=opts.verbose,
                                    lr0=lr0 if opts.lr0 is None else opts.lr0, time_h=opts.time_h,
                                    new_head=plan.new_head, export_epoch=opts.export_epoch)
        trained = finetune_detector(base, data, settings, work, on_epoch, say)
        return trained, _calibration_folder(data, work / "data" / "images" / "train")
    from agent.tooling.training.classifier import ClassifierSettings, finetune_classifier

    lr = ClassifierSettings.lr if not plan.new_head else ClassifierSettings.new_head_lr
    csettings = ClassifierSettings(epochs=opts.epochs, batch=opts.batch, seed=opts.seed, threads=opts.threads,
                                   imgsz=(imgsz[0], imgsz[1]) if imgsz else None,
                                   lr=lr if opts.lr0 is None else opts.lr0, time_h=opts.time_h,
                                   new_head=plan.new_head)
    return finetune_classifier(base, data, csettings, work, on_epoch, say), _calibration_folder(data,
                                                                                        data.source / "train")


def _describe_base(base: BaseModel) -> str:
    if base.kind != "onnx":
        return f"base: {base.path} ({base.kind}, detector)"
    return (f"base: {base.path} ({base.task}, {len(base.names)} classes, input {base.imgsz[1]}x{base.imgsz[0]}"
            f"{', INT8 weights (dequantized to start from)' if base.quantized else ''})")


def run_training(opts: TrainOptions, say: Callable[[str], None], on_epoch: Callable[[EpochRow], None]) -> int:
    plan = check_inputs(opts)
    data, base = plan.data, plan.base
    say(f"data: {data.describe()}")
    say(_describe_base(base))
    if plan.new_head:
        say(f"new head for the dataset's {len(data.names)} classes ({', '.join(data.names)})"
            + ("" if base.kind == "yaml" else f" on the backbone of {base.path.name}"))
    require_train_extra(base.task)
    say(f"base network: {check_architecture(base)}")
    work_root = opts.out.resolve().parent
    work_root.mkdir(parents=True, exist_ok=True)
    # everything is made in a work folder beside OUT and moved into place at the end: an interrupted or
    # failed run leaves nothing behind
    with tempfile.TemporaryDirectory(prefix=f".{opts.out.name}-work-", dir=work_root) as tmp:
        work = pathlib.Path(tmp)
        trained, calib = _train(opts, plan, work, say, on_epoch)
        stage = work / "candidate"
        stage.mkdir()
        code = _write_candidate(opts, plan, trained, calib, stage, say)
        if opts.out.exists():  # empty, or --overwrite (checked before training)
            shutil.rmtree(opts.out)
        stage.rename(opts.out)
    if code:
        say(f"the INT8 gate refused the INT8 model: {opts.out} holds the FP32 candidate only (exit 1)")
    say(f"candidate: {opts.out} ({', '.join(sorted(p.name for p in opts.out.iterdir()))})")
    return code


def _scores(plan: Plan, fp32: pathlib.Path, threads: int, say: Callable[[str], None]) -> tuple[Score | None, Score]:
    """The base model's and the candidate's val scores; no base score where the base has other classes."""
    if plan.new_head or plan.base.kind != "onnx":
        say("measuring the candidate on the val split (the base model has other classes: no comparison)")
        cand_score = score_on_val(fp32, plan.data, threads)
        say(f"val {cand_score.metric}: candidate {cand_score.value:.3f}; uncertain (to the VLM) "
            f"{100 * cand_score.uncertain:.1f}%")
        return None, cand_score
    say("measuring the base model and the candidate on the val split")
    base_score = score_on_val(plan.base.path, plan.data, threads)
    cand_score = score_on_val(fp32, plan.data, threads)
    say(f"val {cand_score.metric}: base {base_score.value:.3f}, candidate {cand_score.value:.3f}; uncertain "
        f"(to the VLM): base {100 * base_score.uncertain:.1f}%, candidate {100 * cand_score.uncertain:.1f}%")
    return base_score, cand_score


def _write_candidate(opts: TrainOptions, plan: Plan, trained: TrainedModel, calib: pathlib.Path,
                     stage: pathlib.Path, say: Callable[[str], None]) -> int:
    """FP32 model, scores, card, INT8 + gate, candidate.json into ``stage``; the INT8 step's exit code."""
    data, base, name = plan.data, plan.base, plan.name
    fp32 = stage / f"{name}.onnx"
    shutil.copyfile(trained.onnx, fp32)
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    base_sha = file_digest(base.path) if base.path.is_file() else None
    _stamp_metadata(fp32, {"base": base.path.name, "base_sha256": base_sha, "data": str(data.source),
                           "epochs": len(trained.history), "new_classes": plan.new_head,
                           "time_h": opts.time_h, "created_at": created})
    base_score, cand_score = _scores(plan, fp32, opts.threads, say)
    card_path = base.path.with_name(base.name + ".md")
    earlier = read_earlier_training(card_path.read_text()) if card_path.exists() else None
    record: dict[str, Any] = {
        "schema": CANDIDATE_SCHEMA, "name": name, "task": base.task, "names": list(plan.names),
        "new_classes": {"base_names": list(base.names), "names": list(plan.names)} if plan.new_head else None,
        "time_h": opts.time_h,
        "created_at": created, "input": f"1x3x{trained.details['input'][0]}x{trained.details['input'][1]}",
        "base": {"file": str(base.path), "sha256": base_sha, "model_id": base.model_id, "kind": base.kind,
                 "precision": "int8" if base.quantized else "fp32",
                 "training": earlier.training if earlier else None},
        "data": {"source": str(data.source), "task": data.task, "train_images": len(data.train),
                 "val_images": len(data.val), "counts": data.counts},
        "settings": trained.settings,
        "details": trained.details,
        "train_seconds": round(trained.train_seconds, 1),
        "history": [row.as_json() for row in trained.history],
        "metrics": {"split": "val", "metric": cand_score.metric,
                    "base": round(base_score.value, 4) if base_score else None,
                    "candidate": round(cand_score.value, 4),
                    "uncertain_share": {"base": round(base_score.uncertain, 4) if base_score else None,
                                        "candidate": round(cand_score.uncertain, 4)}},
        "files": {"fp32": fp32.name, "card": f"{name}.md"},
        "command": opts.command,
    }
    (stage / f"{name}.md").write_text(candidate_card(record, trained.history, base_score, cand_score))
    code = 0
    if opts.quantize:
        code = _quantize(opts, base, data, fp32, calib)
        int8 = stage / f"{name}.int8.onnx"
        if int8.exists():
            record["files"]["int8"] = int8.name
            record["files"]["int8_gate"] = f"{name}.int8.gate.json"
        record["int8"] = "passed" if int8.exists() else "refused by the gate"
    else:
        record["int8"] = "not made (--no-quantize)"
    (stage / "candidate.json").write_text(json.dumps(record, indent=1) + "\n")
    return code


def _quantize(opts: TrainOptions, base: BaseModel, data: TrainingData, fp32: pathlib.Path,
              calib: pathlib.Path) -> int:
    from agent.tooling.evaluation.gate import GateLimits
    from agent.tooling.quantize.workflow import QuantizeOptions, run_quantize

    val = data.source  # read as check_training_data read it
    float_stem = DETECTOR_FLOAT_STEM if base.task == "detect" else 0
    command = (f"edge-agent models quantize {opts.out / fp32.name} --calib {calib} --calib-count {CALIBRATION_FRAMES} "
               f"--val {val} --flavour cpu" + (f" --float-stem {float_stem}" if float_stem else ""))
    return run_quantize(QuantizeOptions(
        model=fp32, calib=str(calib), calib_count=CALIBRATION_FRAMES, calib_seed=0, val=str(val), val_split="val",
        synthetic_seed=opts.seed, val_count=len(data.val), flavour="cpu", out_dir=fp32.parent, limits=GateLimits(),
        reduce_range=False, threads=opts.threads, band=TriageConfig(), command=command, float_stem=float_stem))
