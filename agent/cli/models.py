"""``edge-agent models ...``: inspect, evaluate, quantize, promote, roll back, fine-tune, build engines.

Argument parsing only: each command checks its options and calls the workflow in :mod:`agent.tooling`;
errors reach the one boundary of :mod:`agent.cli.boundary`.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Annotated

import typer

from agent.errors import EdgeAgentError

__all__ = ["models_app"]

models_app = typer.Typer(no_args_is_help=True, help=(
    "Prefilter models: inspect, evaluate, quantize to INT8, train (fine-tune or new classes), promote and roll back; "
    "TensorRT engines."))


@models_app.command("info")
def models_info(
    model: Annotated[pathlib.Path, typer.Argument(help="ONNX model file")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show a model's task, classes, input size, precision, opset, id and INT8 gate record."""
    from agent.tooling.models import show_info

    show_info(model, as_json)


@models_app.command("eval")
def models_eval(
    model: Annotated[pathlib.Path, typer.Argument(help="ONNX detector or classifier (the task is read from it)")],
    data: Annotated[pathlib.Path, typer.Option(
        help="detector: a YOLO dataset (a data.yaml, or a folder with images/ and labels/); classifier: a "
             "classify folder (<split>/<class>/*.jpg)")],
    split: Annotated[str, typer.Option(help="split to evaluate")] = "val",
    out: Annotated[pathlib.Path | None, typer.Option(help="report folder (default: ./eval-<model stem>)")] = None,
    conf: Annotated[float, typer.Option(
        help="detector: keep predictions above this confidence (as ultralytics val)")] = 0.001,
    iou: Annotated[float, typer.Option(help="detector: NMS IoU threshold (as ultralytics val)")] = 0.7,
) -> None:
    """Evaluate a model on a labelled split: eval.json and report.html.

    Detector: mAP50, mAP50-95, per-class P/R/F1. Classifier: accuracy, macro F1, per-class P/R/F1, confusion
    matrix, triage coverage."""
    from agent.tooling.models import run_eval

    run_eval(model, data, split, out, conf, iou)


@models_app.command("quantize")
def models_quantize(
    model: Annotated[pathlib.Path, typer.Argument(help="FP32 ONNX prefilter model")],
    calib: Annotated[str, typer.Option(help="calibration frames: a folder of camera frames (JPEG/PNG, one size), "
                                            "or 'synthetic' for the synthetic conveyor scene")],
    calib_count: Annotated[int, typer.Option(help="calibration frames to use (spread over a larger folder)")] = 300,
    calib_seed: Annotated[int, typer.Option(help="seed of the synthetic calibration frames")] = 1000,
    val: Annotated[str, typer.Option(
        help="labelled validation set for the gate: a YOLO data.yaml or folder, or 'synthetic' for the held-out "
             "split of the shipped training script")] = "synthetic",
    val_split: Annotated[str, typer.Option(help="split of --val to evaluate")] = "val",
    synthetic_seed: Annotated[int, typer.Option(help="training seed whose held-out split --val synthetic renders")] = 7,
    val_count: Annotated[int, typer.Option(help="images in the synthetic held-out split")] = 150,
    flavour: Annotated[str, typer.Option(
        help="cpu (U8S8, ONNX Runtime CPU), tensorrt (S8S8 symmetric), or both")] = "both",
    out_dir: Annotated[pathlib.Path | None, typer.Option(help="where INT8 files go (default: next to MODEL)")] = None,
    max_drop: Annotated[float, typer.Option(
        help="refuse when the metric (mAP50 / accuracy) drops by more points")] = 1.0,
    max_verdict_changes: Annotated[float, typer.Option(
        help="refuse when more than this percentage of frame verdicts change")] = 2.0,
    float_stem: Annotated[int, typer.Option(
        min=0, help="leading convolutions kept FP32 (they see the raw image; faint defects live in small "
                    "contrasts there): 2 for the shipped detector")] = 0,
    reduce_range: Annotated[bool, typer.Option(help="7-bit weights, for U8S8 on x86 CPUs without VNNI")] = False,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads while evaluating")] = 2,
    accept: Annotated[float, typer.Option(help="triage accept threshold for the verdict comparison")] = 0.6,
    reject: Annotated[float, typer.Option(help="triage reject threshold for the verdict comparison")] = 0.25,
    break_decode: Annotated[bool, typer.Option(
        hidden=True, help="quantize the decode too (wrong on purpose: shows the gate refusing)")] = False,
) -> None:
    """Quantize to INT8 (QDQ) behind an accuracy gate.

    The result is refused (exit 1) when it loses accuracy; a passing one gets <model>.gate.json."""
    from agent.config.models import TriageConfig
    from agent.tooling.evaluation.gate import GateLimits
    from agent.tooling.quantize.workflow import QuantizeOptions, run_quantize

    try:
        limits = GateLimits(max_drop, max_verdict_changes)
        band = TriageConfig(accept=accept, reject=reject)
    except ValueError as exc:
        raise EdgeAgentError(str(exc).splitlines()[-1] if "validation error" in str(exc) else str(exc)) from None
    code = run_quantize(QuantizeOptions(
        model=model, calib=calib, calib_count=calib_count, calib_seed=calib_seed, val=val, val_split=val_split,
        synthetic_seed=synthetic_seed, val_count=val_count, flavour=flavour, out_dir=out_dir, limits=limits,
        reduce_range=reduce_range, float_stem=float_stem,
        threads=threads, band=band, break_decode=break_decode,
        command="edge-agent models quantize " + " ".join(sys.argv[3:])))
    raise typer.Exit(code)


_ConfigOption = Annotated[pathlib.Path | None, typer.Option(
    "--config", "-c", help="the agent's YAML config: model.path is the model it runs (default: $EDGE_AGENT_CONFIG)")]
_ReloadOption = Annotated[bool, typer.Option(
    "--reload/--no-reload", help="ask the running agent to reload (SIGHUP) and wait until it runs the new model; "
                                 "--no-reload only replaces the files")]
_PidOption = Annotated[int | None, typer.Option(help="the agent's pid (default: read from its pid file)")]
_UnitOption = Annotated[str | None, typer.Option(help="reload through systemd: `systemctl reload UNIT`")]
_PidFileOption = Annotated[pathlib.Path | None, typer.Option(
    help="the agent's pid file (default: $STATE_DIRECTORY/edge-agent.pid, else /var/lib/edge-agent/edge-agent.pid)")]
_HealthOption = Annotated[str | None, typer.Option(
    help="the agent's /healthz URL, to see it run the new model (default: from the config's metrics.listen)")]
_WaitOption = Annotated[float, typer.Option(help="seconds to wait for the agent to run the new model")]
_KeepOption = Annotated[int, typer.Option(help="models kept in the store (<model folder>/.history)")]


def _config_path(config: pathlib.Path | None) -> pathlib.Path | None:
    return config or (pathlib.Path(os.environ["EDGE_AGENT_CONFIG"]) if os.environ.get("EDGE_AGENT_CONFIG") else None)


@models_app.command("promote")
def models_promote(
    candidate: Annotated[pathlib.Path, typer.Argument(
        help="an ONNX model, or a candidate folder from `edge-agent models train` (its INT8 file when the agent "
             "runs INT8, else its FP32 file)")],
    val: Annotated[pathlib.Path, typer.Option(
        help="held-out labelled set: a YOLO dataset (data.yaml or folder) for a detector, a classify folder "
             "(<split>/<class>/) for a classifier")],
    config: _ConfigOption = None,
    split: Annotated[str, typer.Option(help="split of --val to evaluate")] = "val",
    margin: Annotated[float, typer.Option(
        help="refuse a candidate whose metric is below the current model's by more than this (0..1 scale: 0.01 "
             "= one point; negative: the candidate must be better by that much)")] = 0.01,
    metric: Annotated[str | None, typer.Option(
        help="map50 or map50-95 (detector; default map50), accuracy or macro-f1 (classifier; default accuracy), "
             "auroc (anomaly: image AUROC; a first anomaly model must beat chance, 0.5, by 0.1)")
    ] = None,
    reload: _ReloadOption = True,
    pid: _PidOption = None,
    unit: _UnitOption = None,
    pid_file: _PidFileOption = None,
    health: _HealthOption = None,
    wait: _WaitOption = 60.0,
    keep: _KeepOption = 5,
    report: Annotated[pathlib.Path | None, typer.Option(
        help="folder for the before/after report (default: <candidate folder>/promotion-<time>/)")] = None,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime intra-op threads while evaluating")] = 2,
    allow_new_classes: Annotated[bool, typer.Option(
        "--allow-new-classes", help="let a candidate with other classes than the running model's replace it "
                                    "(models train --new-classes); --val holds the candidate's classes, and only "
                                    "the candidate is evaluated (refused when it finds none of them); also a task "
                                    "change (e.g. classifier -> anomaly model)")] = False,
) -> None:
    """Put a better model into the running agent, after a comparison.

    Evaluates CANDIDATE against the model the agent runs on a held-out set; refuses it (exit 1) when it is worse
    by more than --margin, else replaces the model file (the old one kept for `models rollback`) and has the
    running agent swap it in live. Exit 3 when the agent did not take it."""
    from agent.tooling.promote import AgentTarget, PromoteOptions, run_promote

    target = AgentTarget(reload=reload, pid=pid, unit=unit, pid_file=pid_file, health=health, wait_s=wait)
    code = run_promote(PromoteOptions(candidate=candidate, config=_config_path(config), val=val, split=split,
                                      margin=margin, metric=metric, target=target, keep=keep, report=report,
                                      threads=threads, allow_new_classes=allow_new_classes))
    raise typer.Exit(code)


@models_app.command("rollback")
def models_rollback(
    config: _ConfigOption = None,
    reload: _ReloadOption = True,
    pid: _PidOption = None,
    unit: _UnitOption = None,
    pid_file: _PidFileOption = None,
    health: _HealthOption = None,
    wait: _WaitOption = 60.0,
    keep: _KeepOption = 5,
) -> None:
    """Put back the model the last promotion replaced.

    Takes it from <model folder>/.history and has the running agent swap it in live; a second rollback goes
    one promotion further back."""
    from agent.tooling.promote import AgentTarget, RollbackOptions, run_rollback

    target = AgentTarget(reload=reload, pid=pid, unit=unit, pid_file=pid_file, health=health, wait_s=wait)
    code = run_rollback(RollbackOptions(config=_config_path(config), target=target, keep=keep))
    raise typer.Exit(code)


@models_app.command("train")
def models_train(
    data: Annotated[list[pathlib.Path], typer.Option(
        metavar="PATH", help="training data: a YOLO dataset (data.yaml with names, train, val) for a detector, or "
             "image folders (train/<class>/, val/<class>/) for a classifier; --task anomaly: a folder of good "
             "images or a recorder's folder (its frames the VLM called pass), repeatable")],
    base: Annotated[pathlib.Path | None, typer.Option(
        help="model to start from: the ONNX detector or classifier the agent runs (FP32 or INT8); for a detector "
             "also an ultralytics checkpoint (yolov8n.pt) or model yaml (yolov8s.yaml: from scratch); "
             "not for --task anomaly")] = None,
    task: Annotated[str | None, typer.Option(help="anomaly: a good-parts-only model (docs/anomaly.md)")] = None,
    out: Annotated[pathlib.Path | None, typer.Option(
        help="new folder for the candidate (default: candidates/<model>-<UTC time>)")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="training epochs")] = 10,
    imgsz: Annotated[str | None, typer.Option(
        help="training input size: one side for a detector (320), HxW for a classifier (192x256); "
             "default: the base model's")] = None,
    lr0: Annotated[float | None, typer.Option(
        min=0.0, help="initial learning rate, AdamW (default: 2e-4 detector, 2e-5 classifier)")] = None,
    batch: Annotated[int, typer.Option(min=1, help="images per training step")] = 16,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for training and evaluation")] = 2,
    seed: Annotated[int, typer.Option(help="random seed (training is deterministic per seed and threads)")] = 7,
    quantize: Annotated[bool, typer.Option(
        help="make the INT8 model and run its accuracy gate on the val split")] = True,
    overwrite: Annotated[bool, typer.Option(help="replace what is in --out")] = False,
    verbose: Annotated[bool, typer.Option(help="show the trainer's own output")] = False,
    export_epoch: Annotated[str, typer.Option(
        help="detector: the epoch exported, best (by the val split's fitness) or last; a dataset recorded by the "
             "agent has val boxes from the base model itself, which makes the first epochs look best: use last "
             "there and let `models promote` judge. The classifier always exports its last epoch")] = "best",
    new_classes: Annotated[bool, typer.Option(
        "--new-classes", help="the dataset's classes differ from the base model's: train a new head for them on "
                              "the base's backbone (detector input: the dataset's image size unless --imgsz)")] = False,
    time: Annotated[float | None, typer.Option(
        "--time", help="training budget in hours (like ultralytics' time=; replaces --epochs for a detector, "
                       "stops the classifier's epochs), e.g. 0.5")] = None,
    taxonomy: Annotated[pathlib.Path | None, typer.Option(
        help="the plant's taxonomy file: every class of the dataset must be one of its labels or synonyms")] = None,
    defects: Annotated[pathlib.Path | None, typer.Option(help="anomaly: labelled defects (YOLO, val)")] = None,
    frr: Annotated[float, typer.Option(min=0.0, max=0.5, help="anomaly: false-reject rate at the threshold")] = 0.01,
    steps: Annotated[int, typer.Option(min=1, help="anomaly: training steps (--time stops them earlier)")] = 1500,
) -> None:
    """Fine-tune a detector or classifier (or train new classes, or an anomaly model) into a candidate folder.

    Offline (needs the train extra); the folder holds the FP32 ONNX, the INT8 ONNX with its gate record, and a
    model card. Exit 1 when the INT8 gate refused."""
    from agent.tooling.training.command import check_task, run_anomaly_command, run_train_command

    command = "edge-agent models train " + " ".join(sys.argv[3:])
    base_model = check_task(task, data, base)
    if base_model is None:
        raise typer.Exit(run_anomaly_command(data, out, imgsz, steps, time, batch, threads, seed, frr, defects,
                                             quantize, overwrite, command, base))
    code = run_train_command(data[0], base_model, out, epochs, imgsz, lr0, batch, threads, seed, quantize, overwrite,
                             verbose, command, export_epoch,
                             new_classes=new_classes, time_h=time, taxonomy=taxonomy)
    raise typer.Exit(code)


@models_app.command("build-engine")
def models_build_engine(
    model: Annotated[pathlib.Path, typer.Argument(help="ONNX model: the TensorRT INT8 flavour (S8S8 Q/DQ) or FP32")],
    precision: Annotated[str | None, typer.Option(
        help="auto (int8 for a Q/DQ model, else fp32), int8, fp16 or fp32; default: model.precision")] = None,
    batch: Annotated[str | None, typer.Option(
        help="batch profile MIN:OPT:MAX (or N = 1:N:N); default: the agent's, 1:N:N with N = model.max_batch "
             "for a detector, 1 for a classifier")] = None,
    cache_dir: Annotated[pathlib.Path | None, typer.Option(
        help="engine cache directory; default: model.engine_cache_dir, else $STATE_DIRECTORY/engines")] = None,
    config: Annotated[pathlib.Path | None, typer.Option(
        "--config", "-c", help="agent config whose model settings give the defaults (default: $EDGE_AGENT_CONFIG)")
    ] = None,
    device: Annotated[int | None, typer.Option(help="CUDA device index; default: model.gpu_device")] = None,
    force: Annotated[bool, typer.Option(help="build again even when a valid plan is cached")] = False,
) -> None:
    """Build the TensorRT plan for model.runtime tensorrt.

    The plan is cached by model hash, GPU, TensorRT version, precision and batch profile; shows progress and
    prints the plan's path."""
    from agent.tooling.engine import BuildEngineOptions, main_build_engine

    main_build_engine(BuildEngineOptions(model=model, precision=precision, batch=batch, cache_dir=cache_dir,
                                         config=config, device=device, force=force))


@models_app.command("probe-runtime")
def models_probe_runtime(
    model: Annotated[pathlib.Path, typer.Argument(help="ONNX model (FP32 or INT8 Q/DQ) or OpenVINO IR (.xml)")],
    cache_dir: Annotated[pathlib.Path | None, typer.Option(
        help="where the result is cached; default: model.engine_cache_dir, else $STATE_DIRECTORY/engines")] = None,
    config: Annotated[pathlib.Path | None, typer.Option(
        "--config", "-c", help="agent config whose model settings (threads, runs, batch) the probe uses "
                               "(default: $EDGE_AGENT_CONFIG)")] = None,
) -> None:
    """Measure ONNX Runtime and OpenVINO on this model and box for model.runtime auto.

    A second or two; the result is cached (keyed by the model, the CPU, the runtime versions and the thread
    settings), so the agent starts without probing. Prints each runtime's frames per second and the choice."""
    from agent.tooling.runtime_probe import run_probe_runtime

    run_probe_runtime(model, config, cache_dir)
