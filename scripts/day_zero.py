#!/usr/bin/env python3
"""Day zero, no labels: a new line's first INT8 prefilter from the VLM's answers alone, with our commands.

    python scripts/day_zero.py [--prefilter anomaly|classify] [--work DIR] [--learn-frames 800]
                               [--fresh-frames 400] [--imgsz 320x320] [--time 0.4] [--json OUT]
                               anomaly: [--steps 1500] [--pass-below 0.2] [--defect-at 0.7]
                               classify: [--epochs 4] [--batch 16] [--lr0 LR]
(needs the train extra for ``models train``: ``pip install -e '.[train]'``; Mosquitto on the PATH)

The line: the grey surface scene (``synthetic://surface``, 640x640, six small defect kinds, about half the
frames clean) and a plant taxonomy of its defect names. There is no model and no label. Every step is the
``edge-agent`` command a user runs (a subprocess each):

1. ``edge-agent gateway`` with ``taxonomy:`` (real gRPC) in front of the VLM; 2. ``edge-agent run`` in learn
mode (no prefilter): a sample of the frames goes to the VLM, the answers are published and recorded;
3. ``edge-agent dataset export --format imagefolder`` (train/val, a folder per class, ``pass`` the good frames);
4. ``edge-agent models train``, INT8 behind its gate (gate refused: exit 1, the FP32 candidate goes on):
   ``--prefilter anomaly`` (default): ``--task anomaly`` on ``data/train/pass``, the frames the VLM called
   pass (the val split's stay unseen for the gate); ``--prefilter classify``: ``--new-classes``, a frame
   classifier of the VLM's classes on the shipped classifier's backbone;
5. ``edge-agent models promote`` (the line's first model, judged on the export's val split, labelled by the VLM:
   an anomaly model on image AUROC, refused unless it beats chance by 0.1; a classifier, with
   ``--allow-new-classes``, on accuracy against the class prior; refused: no step 6);
6. ``edge-agent run`` inspecting with the promoted prefilter on frames never seen (another seed); the anomaly
   model with ``triage.anomaly`` (``--pass-below``, ``--defect-at``): it passes the frames it scores low, calls
   defect the ones it scores high, and escalates the rest, whose defect the VLM names.

**The VLM is simulated** (a stated simulation, not a claim about LLaVA): the fake Ollama of ``tests/fakes``
(faithful to Ollama's HTTP API) answers from the scene's ground truth (``TruthOracle``), **wrong on
``--error-rate`` (5%) of the frames** (a defective frame called ``pass``, a clean one a defect), decided per
frame by a seeded hash. It runs in this process; everything else is a real process or server (Mosquitto,
the gateway, the agent).

What is printed, against the scene's ground truth of every frame (positive class: defect): **before** (learn
mode) only the frames sent to the VLM were inspected, with the VLM's verdicts (F1 over those; the others are
counted, not scored; escalation 100%); **after** (the promoted prefilter, fresh frames) every frame taken was
inspected: the prefilter decides those it is sure about, the rest go to the VLM; F1 of the final verdicts over
all, the escalation rate, and the prefilter's own F1 on what it decided.

Each step's wall time and the load average (1 min) before and after it are printed: the box is shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import yaml  # noqa: E402
from day_zero_parts import (  # noqa: E402
    REPO,
    Score,
    Steps,
    edge_agent,
    inspected,
    learn_counts,
    run_agent,
    scene_truths,
    score,
    services,
    write_taxonomy,
)

from agent.capture.surface import SURFACE_CLASSES  # noqa: E402
from agent.publish.local_broker import LocalMosquitto  # noqa: E402
from tests.fakes.vlm_oracle import TruthOracle  # noqa: E402

BASE = REPO / "models" / "conveyor-resnet-cls.int8.onnx"


def agent_config(work: pathlib.Path, name: str, *, broker: LocalMosquitto, gateway: str, seed: int, frames: int,
                 fps: float, learn: bool, args: argparse.Namespace) -> pathlib.Path:
    doc: dict[str, Any] = {
        "device_id": "box1", "taxonomy": "taxonomy.yaml",
        "model": {"path": "models/line3.onnx", "intra_op_threads": 1},  # where the line's model goes
        "cameras": [{"id": "line3", "source": f"synthetic://surface?seed={seed}&fps={fps:g}&frames={frames}",
                     "record": learn}],
        "mqtt": {"url": broker.url, "stats_interval_s": 0},
        "metrics": {"enabled": False},
        "outbox": {"path": f"state/{name}-outbox.db"},
        # every escalation is let through (the VLM's throughput is not what is measured); every surface patch
        # is a new scene, so the near-duplicate cache is off (a hash collision would reuse another frame's answer)
        "escalation": {"gateway": gateway, "rate_per_camera": {"per_minute": 60_000, "burst": 1000},
                       "dedupe": {"enabled": False}},
        "dataset": {"dir": "recording"},
    }
    if not learn and args.prefilter == "anomaly":
        doc["triage"] = {"anomaly": {"pass_below": args.pass_below, "defect_at": args.defect_at}}
    if learn:
        doc["mode"] = "learn"
        doc["learn"] = {"sample_per_minute": args.sample_per_minute, "scene_change_bits": 12,
                        "scene_changes_per_minute": args.scene_changes_per_minute, "scene_change_burst": 3}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=pathlib.Path, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--prefilter", choices=("anomaly", "classify"), default="anomaly",
                        help="the line's first prefilter: an anomaly model trained on the frames the VLM called pass "
                             "(models train --task anomaly), or a classifier of the VLM's classes (--new-classes)")
    parser.add_argument("--learn-seed", type=int, default=5, help="the learn-mode camera's scene seed")
    parser.add_argument("--fresh-seed", type=int, default=9, help="the fresh run's scene seed (frames never seen)")
    parser.add_argument("--learn-frames", type=int,
                        help="frames of the learn-mode camera (default: 1600 for anomaly, more good frames; 800)")
    parser.add_argument("--fresh-frames", type=int, default=400, help="frames of the fresh run")
    parser.add_argument("--fps", type=float, default=8.0, help="the camera's frame rate")
    parser.add_argument("--sample-per-minute", type=float, default=120.0, help="learn.sample_per_minute")
    parser.add_argument("--scene-changes-per-minute", type=float, default=120.0,
                        help="learn.scene_changes_per_minute (every surface frame is a scene change)")
    parser.add_argument("--error-rate", type=float, default=0.05, help="share of frames the simulated VLM gets wrong")
    parser.add_argument("--vlm-seed", type=int, default=3, help="seed of the simulated VLM's errors")
    parser.add_argument("--imgsz", default="320x320", help="models train --imgsz (height x width)")
    parser.add_argument("--epochs", type=int, default=4, help="classify: models train --epochs")
    parser.add_argument("--steps", type=int, default=1500, help="anomaly: models train --steps (--time stops earlier)")
    parser.add_argument("--pass-below", type=float, default=0.2, help="anomaly: fresh run's triage.anomaly.pass_below")
    parser.add_argument("--defect-at", type=float, default=0.7, help="anomaly: fresh run's triage.anomaly.defect_at")
    parser.add_argument("--time", type=float, help="models train --time (hours; default 0.3 anomaly, 0.4 classify)")
    parser.add_argument("--batch", type=int, default=16, help="classify: models train --batch")
    parser.add_argument("--lr0", type=float, help="classify: models train --lr0 (default: the command's own)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="dataset export --val-fraction")
    parser.add_argument("--json", type=pathlib.Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    anomaly = args.prefilter == "anomaly"
    args.learn_frames = args.learn_frames or (1600 if anomaly else 800)
    args.time = args.time or (0.3 if anomaly else 0.4)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    temp = None if args.work else tempfile.TemporaryDirectory(prefix="day-zero-")
    work = (args.work or pathlib.Path(temp.name if temp else ".")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "state").mkdir(exist_ok=True)
    (work / "models").mkdir(exist_ok=True)
    try:
        return day_zero(work, args)
    finally:
        if temp is not None:
            temp.cleanup()


@dataclasses.dataclass
class Outcome:
    """What the day-zero run gathered: learn mode's events and counts, the export, the training's lines, and the
    fresh run's events."""

    counts: dict[str, int]  # learn mode's frame fates
    docs: list[dict[str, Any]]  # learn mode's published events
    answered: list[dict[str, Any]]  # ... those the VLM answered
    taken: int  # frames the learning camera gave
    split_counts: dict[str, dict[str, int]]
    epoch_lines: list[str]
    gate_lines: list[str]
    fresh_docs: list[dict[str, Any]]
    fresh_out: str
    refusal: str | None  # why `models promote` refused the first model (None: promoted)


def day_zero(work: pathlib.Path, args: argparse.Namespace) -> int:
    steps = Steps()
    started = time.monotonic()
    print(f"work folder {work}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    with steps.run("scene truth for the simulated VLM"):
        learn_images, learn_truths = scene_truths(args.learn_seed, args.learn_frames)
        fresh_images, fresh_truths = scene_truths(args.fresh_seed, args.fresh_frames)
        oracle = TruthOracle(learn_images + fresh_images, learn_truths + fresh_truths, SURFACE_CLASSES,
                             error_rate=args.error_rate, seed=args.vlm_seed)
        del learn_images, fresh_images
    write_taxonomy(work / "taxonomy.yaml")
    print(f"SIMULATION: the VLM is the fake Ollama answering from the scene's ground truth, wrong on "
          f"{100 * args.error_rate:g}% of the frames (seed {args.vlm_seed})", flush=True)
    with services(work, oracle) as svc:
        with steps.run("learn mode: edge-agent run (no prefilter)"):
            learn_cfg = agent_config(work, "learn", broker=svc.broker, gateway=svc.gateway, seed=args.learn_seed,
                                     frames=args.learn_frames, fps=args.fps, learn=True, args=args)
            docs, out = run_agent(work, learn_cfg, svc.broker)
        counts = learn_counts(out)
        asked, wrong = oracle.asked, oracle.wrong
        taken = sum(counts.get(f, 0) for f in ("sampled_schedule", "sampled_scene_change", "skipped_rate",
                                               "skipped_unchanged"))
        print(f"   learn counts {counts}; published {len(docs)}; the VLM was asked {asked}, wrong {wrong}", flush=True)
        split_counts, epoch_lines, gate_lines, refusal = _export_train_promote(work, args, learn_cfg, steps)
        fresh_docs: list[dict[str, Any]] = []
        fresh_out = ""
        if refusal is None:
            with steps.run("fresh run: edge-agent run with the promoted prefilter (another seed)"):
                fresh_cfg = agent_config(work, "fresh", broker=svc.broker, gateway=svc.gateway,
                                         seed=args.fresh_seed, frames=args.fresh_frames, fps=args.fps, learn=False,
                                         args=args)
                fresh_docs, fresh_out = run_agent(work, fresh_cfg, svc.broker)
        else:  # the cameras keep learning: there is no prefilter to run on fresh frames
            print(f"   no fresh run: the promotion was refused ({refusal})", flush=True)
    outcome = Outcome(counts, docs, [d for d in docs if d["escalation"]["status"] == "answered"], taken, split_counts,
                      epoch_lines, gate_lines, fresh_docs, fresh_out, refusal)
    return _report(work, args, steps, time.monotonic() - started, oracle, outcome, learn_truths, fresh_truths)


def _export_train_promote(work: pathlib.Path, args: argparse.Namespace, learn_cfg: pathlib.Path, steps: Steps
                          ) -> tuple[dict[str, dict[str, int]], list[str], list[str], str | None]:
    """dataset export, models train --new-classes, models promote --allow-new-classes: the export's counts per
    split and class, the training's epoch and gate lines, and why the promotion was refused (None: promoted)."""
    with steps.run("edge-agent dataset export --format imagefolder"):
        edge_agent(work, "dataset", "export", "--from", "recording", "--out", "data", "--format", "imagefolder",
                   "--split-gap", "0", "--val-fraction", f"{args.val_fraction:g}")
    manifest = json.loads((work / "data" / "dataset.json").read_text())
    split_counts = {split: {c: len(list((work / "data" / split / c).glob("*"))) for c in manifest["names"]
                            if (work / "data" / split / c).is_dir()} for split in ("train", "val")}
    print(f"   exported {split_counts}", flush=True)
    epoch_lines, gate_lines = (_train_anomaly if args.prefilter == "anomaly" else _train_classifier)(work, args, steps)
    for line in epoch_lines[-4:] + gate_lines[-4:]:
        print("   " + line, flush=True)
    # an anomaly model is judged on image AUROC on the export's val split (pass: good; every defect class: defective)
    flag = ("--allow-new-classes",) if args.prefilter == "classify" else ()
    with steps.run(f"edge-agent models promote {' '.join(flag)}".rstrip()):
        promote_out = edge_agent(work, "models", "promote", "candidate", "--config", str(learn_cfg), "--val",
                                 "data", *flag, ok=(0, 1))  # 1: refused (the cameras keep learning)
    for line in promote_out.splitlines():
        if line.startswith(("candidate:", "accepted", "installed", "accuracy", "image AUROC", "REFUSED", "refused")):
            print("   " + line, flush=True)
    refused = re.search(r"^REFUSED: (.+)$", promote_out, re.M)
    return split_counts, epoch_lines, gate_lines, refused[1] if refused else None


def _train_classifier(work: pathlib.Path, args: argparse.Namespace, steps: Steps) -> tuple[list[str], list[str]]:
    """models train --new-classes: a classifier of the VLM's classes on the shipped classifier's backbone."""
    with steps.run("edge-agent models train --new-classes (and its INT8 gate)"):
        out = edge_agent(work, "models", "train", "--data", "data", "--base", str(BASE), "--new-classes",
                         "--imgsz", args.imgsz, "--epochs", str(args.epochs), "--time", f"{args.time:g}",
                         "--batch", str(args.batch), *(("--lr0", f"{args.lr0:g}") if args.lr0 else ()),
                         "--taxonomy", "taxonomy.yaml", "--out", "candidate",
                         ok=(0, 1))  # 1: the INT8 gate refused; the FP32 candidate is promoted then
    epoch_lines = [ln for ln in out.splitlines() if re.match(r"^\s*epoch\s", ln, re.I)]
    gate_lines = [ln for ln in out.splitlines() if "gate" in ln.lower() or "uncertain" in ln.lower()
                  or "val accuracy" in ln.lower()]
    return epoch_lines, gate_lines


def _train_anomaly(work: pathlib.Path, args: argparse.Namespace, steps: Steps) -> tuple[list[str], list[str]]:
    """models train --task anomaly on the export's train/pass: the frames the VLM called pass, without the val
    split's (the gate's held-out good frames stay unseen)."""
    with steps.run("edge-agent models train --task anomaly (and its INT8 gate)"):
        out = edge_agent(work, "models", "train", "--task", "anomaly", "--data", "data/train/pass", "--imgsz",
                         args.imgsz, "--steps", str(args.steps), "--time", f"{args.time:g}", "--out", "candidate",
                         ok=(0, 1))  # 1: the INT8 gate refused; the FP32 candidate is promoted then
    lines = out.splitlines()
    step_lines = [ln for ln in lines if re.match(r"^\s*step\s", ln, re.I)]
    gate_lines = [ln for ln in lines if ln.startswith(("good frames:", "threshold", "FP32", "INT8", "warning"))
                  or "AUROC" in ln or "gate" in ln.lower()]
    return step_lines, gate_lines


def _report(work: pathlib.Path, args: argparse.Namespace, steps: Steps, total_s: float, oracle: TruthOracle,
            o: Outcome, learn_truths: list[frozenset[str]], fresh_truths: list[frozenset[str]]) -> int:
    """Print the before/after table, the settings and the steps; write the numbers (--json, and day_zero.json in
    --work)."""
    before = score(o.answered, learn_truths)
    after = score(o.fresh_docs, fresh_truths)
    by_prefilter = [d for d in o.fresh_docs if d["decided_by"] == "prefilter" and d["verdict"] != "uncertain"]
    escalated = [d for d in o.fresh_docs if d["escalation"]["status"] != "not_needed"]
    prefilter_only = score(by_prefilter, fresh_truths)
    by_vlm = score([d for d in o.fresh_docs if d["escalation"]["status"] == "answered"], fresh_truths)
    statuses: dict[str, int] = {}
    for d in o.fresh_docs:
        statuses[d["escalation"]["status"]] = statuses.get(d["escalation"]["status"], 0) + 1
    fresh_taken = inspected(o.fresh_out)
    _print_table(args, oracle, o, before, after, prefilter_only, len(by_prefilter), len(escalated), fresh_taken)
    model_ids = {d["prefilter"]["model"] for d in o.fresh_docs}
    # the cascade: what the prefilter tags (an anomaly model: `anomaly`), and whether the VLM names the defect of
    # the escalated frames it calls defective (a label of the plant's taxonomy)
    vlm_defects = [d for d in o.fresh_docs if d["escalation"]["status"] == "answered" and d["verdict"] == "defect"]
    named = sum(any(t["source"] == "vlm" and t["label"] in SURFACE_CLASSES for t in d["tags"]) for d in vlm_defects)
    prefilter_labels = sorted({t["label"] for d in o.fresh_docs for t in d["tags"] if t["source"] != "vlm"})
    settings = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()}
    print(f"escalation statuses after: {statuses}; prefilter model(s): {', '.join(sorted(model_ids))}; prefilter "
          f"tags {prefilter_labels}; the VLM named a defect of the taxonomy on {named} of the {len(vlm_defects)} "
          "escalated frames it called defective")
    print("settings: " + ", ".join(f"{k} {v}" for k, v in settings.items() if k not in ("json", "work")))
    print("steps: " + "; ".join(f"{s.name}: {s.seconds:.0f} s (load {s.load_before:.1f} -> {s.load_after:.1f})"
                                for s in steps.rows) + f"; total {total_s / 60:.1f} min")
    numbers: dict[str, Any] = {
        "settings": settings,
        "simulation": {"error_rate": args.error_rate, "asked": oracle.asked, "wrong": oracle.wrong},
        "learn": {"counts": o.counts, "published": len(o.docs), "answered": len(o.answered), "taken": o.taken,
                  "f1": before.f1, "pass_f1": before.pass_f1, "precision": before.precision, "recall": before.recall},
        "export": o.split_counts,
        "train": {"epochs": o.epoch_lines, "gate": o.gate_lines},
        "promote": {"accepted": o.refusal is None, "reason": o.refusal or ""},
        "fresh": {"frames": args.fresh_frames, "inspected": fresh_taken, "events": len(o.fresh_docs),
                  "escalated": len(escalated), "escalation_rate": len(escalated) / max(1, len(o.fresh_docs)),
                  "decided_by_prefilter": len(by_prefilter),
                  "prefilter_share": len(by_prefilter) / max(1, len(o.fresh_docs)), "f1": after.f1,
                  "pass_f1": after.pass_f1, "precision": after.precision, "recall": after.recall,
                  "prefilter_f1": prefilter_only.f1, "prefilter_pass_f1": prefilter_only.pass_f1,
                  "vlm_f1": by_vlm.f1,
                  "statuses": statuses, "models": sorted(model_ids), "vlm_defects": len(vlm_defects),
                  "vlm_defects_named": named, "prefilter_labels": prefilter_labels},
        "steps": [dataclasses.asdict(s) for s in steps.rows], "total_s": total_s,
    }
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))
    if args.work is not None:
        (work / "day_zero.json").write_text(json.dumps(numbers, indent=2))
    return 0


def _print_table(args: argparse.Namespace, oracle: TruthOracle, o: Outcome, before: Score, after: Score,
                 prefilter_only: Score, by_prefilter: int, escalated: int, fresh_taken: int) -> None:
    fresh = len(o.fresh_docs)
    rows = [
        ("frames the camera gave", f"{o.taken}", f"{fresh_taken} inspected of {args.fresh_frames}"),
        ("frames inspected (given a verdict)", f"{len(o.answered)} (the VLM's answers; {o.taken - len(o.docs)} not "
         "sent, no verdict)", f"{fresh}"),
        ("sent to the VLM (escalation rate)", f"{len(o.docs)} of {o.taken} taken; 100% of the inspected",
         f"{escalated} of {fresh} = {100 * escalated / max(1, fresh):.1f}%"),
        ("decided by the prefilter", "0 (no prefilter)", f"{by_prefilter} = {100 * by_prefilter / max(1, fresh):.1f}%"),
        ("pass/defect F1 (defect positive)", f"{before.f1:.3f} on the {before.frames} answered",
         f"{after.f1:.3f} on all {after.frames}"),
        ("  precision / recall", f"{before.precision:.3f} / {before.recall:.3f}",
         f"{after.precision:.3f} / {after.recall:.3f}"),
        ("  F1 of pass (pass positive)", f"{before.pass_f1:.3f}", f"{after.pass_f1:.3f}"),
        ("prefilter alone, frames it decided: F1", "-", f"{prefilter_only.f1:.3f} on {prefilter_only.frames} "
         f"(pass F1 {prefilter_only.pass_f1:.3f})"),
    ]
    print("\nDay zero, no labels: before (learn mode, no prefilter) and after (the promoted INT8 prefilter, "
          "fresh frames)")
    print(f"SIMULATION: the VLM answers from the ground truth and is wrong on {100 * args.error_rate:g}% of the "
          f"frames; it was wrong on {oracle.wrong} of the {oracle.asked} frames it was asked about in this run")
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}} | before (learn mode) | after (prefilter + VLM)")
    for name, b, a in rows:
        print(f"{name:<{width}} | {b} | {a}")


if __name__ == "__main__":
    raise SystemExit(main())
