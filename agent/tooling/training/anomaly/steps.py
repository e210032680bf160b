"""The slow part of ``models train --task anomaly`` (see :mod:`.run` for the order): train, export, threshold,
judge on the validation set, INT8 with its gate, the card. Needs the train extra."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agent.config.models import ModelConfig, TriageConfig
from agent.prefilter.anomaly import AnomalyModel
from agent.prefilter.factory import open_prefilter
from agent.tooling.evaluation.anomaly import at_threshold, auroc, threshold_at_frr
from agent.tooling.evaluation.anomaly_dataset import AnomalyEvaluation, evaluate_anomaly
from agent.tooling.evaluation.dataset import read_yolo_dataset
from agent.tooling.training.anomaly.data import GoodSet, load_frames
from agent.tooling.training.anomaly.export import MEAN, STD, export_onnx, model_scores, set_metadata
from agent.tooling.training.anomaly.fit import FitSettings, StepRow, fit
from agent.tooling.training.anomaly.run import AnomalyTrainOptions, elapsed, split_good
from agent.tooling.training.anomaly.valset import write_calibration_frames, write_validation_set

CALIBRATION_FRAMES = 200
SUSPECTS_SHOWN = 10


def _train(opts: AnomalyTrainOptions, frames: Sequence[np.ndarray], grey: bool, say: Callable[[str], None]) -> Any:
    crop = min(128, *(s // 4 * 4 for s in frames[0].shape[:2]))
    settings = FitSettings(steps=opts.steps, batch=opts.batch, crop=crop, seed=opts.seed, threads=opts.threads,
                           time_s=opts.time_s, grey=grey)
    say(f"training on {len(frames)} good frames at {frames[0].shape[1]}x{frames[0].shape[0]}: up to {opts.steps} "
        f"steps of {opts.batch} crops of {crop} px" + (f", at most {opts.time_s / 60:.0f} min" if opts.time_s else ""))

    def report(row: StepRow) -> None:
        say(row.line())
    return fit(frames, MEAN, STD, settings, report)


def _threshold(opts: AnomalyTrainOptions, fp32: pathlib.Path, train: Sequence[np.ndarray],
               held: Sequence[np.ndarray], paths: Sequence[pathlib.Path], held_paths: Sequence[pathlib.Path],
               say: Callable[[str], None]) -> dict[str, Any]:
    held_scores = np.array(model_scores(fp32, held, opts.threads))
    threshold = min(max(threshold_at_frr(held_scores, opts.frr), 1e-4), 0.9999)
    set_metadata(fp32, {"threshold": repr(round(threshold, 6)), "false_reject_rate": repr(opts.frr),
                        "threshold_from": f"{len(held)} held-out good frames"})
    say(f"threshold {threshold:.4f}: at most {opts.frr:.1%} of the {len(held)} held-out good frames above it")
    # a defect in the held-out part raises the threshold (measured: 4.8 % defects mixed in, 0.57 -> 0.84), and
    # it is always among the highest held-out scores: name the frames the threshold rests on
    top = np.argsort(-held_scores)[:max(2, int(np.ceil(len(held) * opts.frr)) + 1)]
    resting = [f"{held_paths[i]} ({held_scores[i]:.3f})" for i in top]
    say("the threshold rests on the highest held-out scores: " + ", ".join(resting)
        + "; if one of them shows a defect, remove it from the good set and train again")
    train_scores = np.array(model_scores(fp32, train, opts.threads))
    above = np.flatnonzero(train_scores > threshold)
    suspects = [str(paths[i]) for i in above[np.argsort(-train_scores[above])]]
    if suspects:
        say(f"warning: {len(suspects)} of the {len(train)} training frames ({len(suspects) / len(train):.1%}) score "
            f"above the threshold; defects mixed into the good set look like this: check "
            + ", ".join(suspects[:SUSPECTS_SHOWN]) + (" ..." if len(suspects) > SUSPECTS_SHOWN else ""))
    return {"threshold": threshold, "false_reject_rate": opts.frr, "held_out": len(held),
            "highest_held_out": resting, "training_frames_above": len(suspects), "suspects": suspects[:50]}


def _evaluate(fp32: pathlib.Path, val: pathlib.Path, threads: int) -> tuple[AnomalyEvaluation, list[str]]:
    """The evaluation and the image names in its order (good-*, synthetic-*, defect-*: valset's names)."""
    model = open_prefilter(fp32, ModelConfig(path=fp32, intra_op_threads=threads))
    if not isinstance(model, AnomalyModel):
        raise TypeError(f"{fp32} did not open as an anomaly model")
    dataset = read_yolo_dataset(val, "val")
    return evaluate_anomaly(model, dataset, TriageConfig()), [item.path.name for item in dataset.images]


def _labelled(ev: AnomalyEvaluation, names: Sequence[str], threshold: float) -> dict[str, Any] | None:
    """The held-out good frames against the user's labelled defects only (no synthetic ones): what the
    threshold gives on real defects."""
    keep = [i for i, n in enumerate(names) if not n.startswith("synthetic-")]
    if not any(names[i].startswith("defect-") for i in keep):
        return None
    y, s = [ev.labels[i] for i in keep], [ev.scores[i] for i in keep]
    at = at_threshold(y, s, threshold)
    return {"good": len(y) - sum(y), "defects": sum(y), "image_auroc": auroc(y, s), "recall": at.recall,
            "precision": at.precision, "false_reject_rate": at.false_reject_rate}


def _quantize(opts: AnomalyTrainOptions, fp32: pathlib.Path, train: Sequence[np.ndarray], val: pathlib.Path,
              work: pathlib.Path, grey: bool) -> int:
    from agent.tooling.evaluation.gate import GateLimits
    from agent.tooling.quantize.workflow import QuantizeOptions, run_quantize

    calib = work / "calib"
    write_calibration_frames(calib, train, CALIBRATION_FRAMES, opts.seed + 2, grey)
    return run_quantize(QuantizeOptions(
        model=fp32, calib=str(calib), calib_count=CALIBRATION_FRAMES, calib_seed=0, val=str(val), val_split="val",
        synthetic_seed=opts.seed, val_count=0, flavour="cpu", out_dir=fp32.parent, limits=GateLimits(),
        reduce_range=False, threads=opts.threads, band=TriageConfig(), command=opts.command))


def train_and_judge(opts: AnomalyTrainOptions, good: GoodSet, defects: Sequence[tuple[pathlib.Path, pathlib.Path]],
                    imgsz: tuple[int, int], work: pathlib.Path, say: Callable[[str], None]) -> dict[str, Any]:
    from agent.tooling.training.anomaly.card import anomaly_card

    h, w = imgsz
    frames = load_frames(good.paths, w, h)
    grey = all(np.array_equal(f[..., 0], f[..., 1]) and np.array_equal(f[..., 1], f[..., 2]) for f in frames[:20])
    train_idx, held_idx = split_good(len(frames), opts.seed)
    train = [frames[i] for i in train_idx]
    held = [frames[i] for i in held_idx]
    t0, c0 = time.monotonic(), time.process_time()
    net = _train(opts, train, grey, say)
    training_time = elapsed(t0, c0)
    out = work / "out"
    out.mkdir()
    fp32 = out / f"{opts.name}.onnx"
    export_onnx(net, fp32, h, w, {"trained_on": f"{len(train)} good frames", "grey": repr(grey)})
    threshold = _threshold(opts, fp32, train, held, [good.paths[i] for i in train_idx],
                           [good.paths[i] for i in held_idx], say)
    val = work / "val"
    images = write_validation_set(val, held, train, opts.seed + 1, grey, defects)
    evaluation, names = _evaluate(fp32, val, opts.threads)
    labelled = _labelled(evaluation, names, threshold["threshold"])
    if labelled is not None:
        say(f"on the {labelled['defects']} labelled defects and {labelled['good']} held-out good frames: recall "
            f"{labelled['recall']:.3f}, precision {labelled['precision'] or 0:.3f}, false-reject rate "
            f"{labelled['false_reject_rate']:.3f} at the threshold; image AUROC {labelled['image_auroc']:.3f}")
    say(f"FP32 on the validation set ({images} images: held-out good, the same with synthetic anomalies"
        + (f", {len(defects)} labelled defects" if defects else "") + f"): {evaluation.summary()}")
    for line in evaluation.histogram():
        say(line)
    record: dict[str, Any] = {
        "schema": "edge-agent/candidate/v1", "task": "anomaly", "name": opts.name, "files": {"fp32": fp32.name},
        "input": [h, w], "grey": grey, "good": {"images": len(good.paths), "sources": list(good.sources),
                                               "vlm_passed_high": good.vlm_passed_high},
        "training": {**training_time, "steps": opts.steps, "time_budget_s": opts.time_s, "seed": opts.seed},
        "threshold": threshold, "validation": {**_summary(evaluation, len(defects)), "labelled": labelled},
        "command": opts.command}
    (out / f"{opts.name}.md").write_text(anomaly_card(record, evaluation.histogram()))
    if opts.quantize:
        refused = _quantize(opts, fp32, train, val, work, grey)
        int8 = out / f"{opts.name}.int8.onnx"
        record["int8"] = {"refused": bool(refused), "file": int8.name if int8.exists() else None}
    return record


def _summary(ev: AnomalyEvaluation, defects: int) -> dict[str, Any]:
    at = ev.at_model_threshold
    return {"images": ev.images, "defective": ev.defective, "labelled_defects": defects,
            "image_auroc": ev.image_auroc, "pixel_auroc": ev.pixel_auroc,
            "false_reject_rate": at.false_reject_rate, "recall": at.recall, "precision": at.precision}
