#!/usr/bin/env python3
"""Day zero, no labels: a new line's first INT8 prefilter from the VLM's answers alone, with our commands.

    python scripts/day_zero.py [--work DIR] [--learn-frames 800] [--fresh-frames 400] [--imgsz 320x320]
                               [--epochs 4] [--time 0.4] [--batch 16] [--lr0 LR] [--json OUT]
(needs the train extra for ``models train``: ``pip install -e '.[train]'``; Mosquitto on the PATH)

The line: the grey surface scene (``synthetic://surface``, 640x640, six small defect kinds, about half the
frames clean) and a plant taxonomy of its defect names. There is no model and no label. Every step is the
``edge-agent`` command a user runs (a subprocess each):

1. ``edge-agent gateway`` with ``taxonomy:`` (real gRPC) in front of the VLM; 2. ``edge-agent run`` in learn
mode (no prefilter): a sample of the frames goes to the VLM, the answers are published and recorded;
3. ``edge-agent dataset export --format imagefolder``; 4. ``edge-agent models train --new-classes``: a frame
classifier on the shipped classifier's backbone, quantized to INT8 behind its gate (gate refused: exit 1, the
FP32 candidate goes on); 5. ``edge-agent models promote --allow-new-classes`` (the line's first model, judged on
the export's val split, labelled by the VLM; refused when no better than the class prior: then no step 6);
6. ``edge-agent run`` inspecting with the promoted prefilter on frames never seen (another seed).

**The VLM is simulated** (a stated simulation, not a claim about LLaVA): the fake Ollama of ``tests/fakes``
(faithful to Ollama's HTTP API) answers from the scene's ground truth (``TruthOracle``), **wrong on
``--error-rate`` (5%) of the frames** (a defective frame called ``pass``, a clean one a defect), decided per
frame by a seeded hash. It runs in this process; everything else is a real process or server (Mosquitto,
the gateway, the agent).

What is printed, against the scene's ground truth of every frame (positive class: defect): **before** (learn
mode) only the frames sent to the VLM were inspected, with the VLM's verdicts (F1 over those; the others are
counted, not scored; escalation 100%); **after** (the promoted prefilter, fresh frames) every frame taken was
inspected: the prefilter decides those it is sure about (triage: top-1 >= accept and margin), the rest go to the
VLM; F1 of the final verdicts over all, the escalation rate, and the prefilter's own F1 on what it decided.

Each step's wall time and the load average (1 min) before and after it are printed: the box is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
import yaml  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from agent.capture.scenes import get_scene  # noqa: E402
from agent.capture.surface import SURFACE_CLASSES  # noqa: E402
from agent.publish.local_broker import LocalMosquitto, free_port  # noqa: E402
from tests.fakes.ollama import FakeOllama  # noqa: E402
from tests.fakes.vlm_oracle import TruthOracle  # noqa: E402

BASE = REPO / "models" / "conveyor-resnet-cls.int8.onnx"
DESCRIPTIONS = {
    "scratch": "a thin, long, slightly curved line, lighter or darker than the surface",
    "pit": "a small cluster of tiny dark holes",
    "stain": "a soft, low-contrast blot",
    "crack": "a jagged dark line that branches",
    "inclusion": "a broken dark streak along the rolling direction",
    "dent": "a shallow hollow, lit from one side",
}
SEVERITY = {"crack": "high", "inclusion": "high", "pit": "medium", "dent": "medium", "scratch": "low", "stain": "low"}


@dataclasses.dataclass
class Step:
    name: str
    seconds: float
    load_before: float
    load_after: float


class Steps:
    """Times each step and the load average around it."""

    def __init__(self) -> None:
        self.rows: list[Step] = []

    def run(self, name: str) -> _Timer:
        return _Timer(self, name)


class _Timer:
    def __init__(self, steps: Steps, name: str) -> None:
        self.steps, self.name = steps, name

    def __enter__(self) -> None:
        self.t0, self.load0 = time.monotonic(), os.getloadavg()[0]
        print(f"== {self.name}", flush=True)

    def __exit__(self, *exc: object) -> None:
        row = Step(self.name, time.monotonic() - self.t0, self.load0, os.getloadavg()[0])
        self.steps.rows.append(row)
        print(f"   {row.seconds:.0f} s (load {row.load_before:.1f} -> {row.load_after:.1f})", flush=True)


def edge_agent(work: pathlib.Path, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    """Run ``edge-agent ARGS`` as a user would (this interpreter, this checkout); its output, or SystemExit when
    its exit code is not in ``ok``."""
    print("   $ edge-agent " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "agent.cli.main", *args], cwd=work, env=_env(work),
                          capture_output=True, text=True, timeout=3600)
    out = done.stdout + done.stderr
    if done.returncode not in ok:
        raise SystemExit(f"edge-agent {' '.join(args)} -> exit {done.returncode}\n{out[-4000:]}")
    return out


def _env(work: pathlib.Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "STATE_DIRECTORY": str(work / "state"), "YOLO_OFFLINE": "1",
            "YOLO_CONFIG_DIR": str(work / "yolo-config")}


def write_taxonomy(path: pathlib.Path) -> None:
    """The plant's taxonomy: the defect names of the line, a description each (told to the VLM)."""
    path.write_text(yaml.safe_dump({"version": 1, "line": {
        "part": "a grey metal sheet or fabric web, seen from above by a mono camera",
        "good": "an even texture (streaks, tool marks or weave) with no marks, holes or blots"},
        "labels": [{"label": name, "code": f"S-{i + 1:02d}", "severity": SEVERITY[name],
                    "description": DESCRIPTIONS[name]} for i, name in enumerate(SURFACE_CLASSES)]},
        sort_keys=False))


def scene_truths(seed: int, frames: int) -> tuple[list[Any], list[frozenset[str]]]:
    stream = get_scene("surface").stream(seed)
    images, truths = [], []
    for _ in range(frames):
        image, truth = stream.next_frame()
        images.append(image)
        truths.append(frozenset(d.label for d in truth.defects))
    return images, truths


@dataclasses.dataclass
class Collected:
    tags: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def subscribe(url: str, topic: str) -> tuple[mqtt.Client, Collected]:
    got = Collected()
    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"day-zero-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.on_subscribe = lambda *_a: ready.set()
    client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
    client.on_message = lambda _c, _u, msg: got.tags.append(json.loads(msg.payload))
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    client.connect(host, int(port))
    client.loop_start()
    if not ready.wait(10):
        raise SystemExit(f"could not subscribe to {topic} on {url}")
    return client, got


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
    if learn:
        doc["mode"] = "learn"
        doc["learn"] = {"sample_per_minute": args.sample_per_minute, "scene_change_bits": 12,
                        "scene_changes_per_minute": args.scene_changes_per_minute, "scene_change_burst": 3}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_agent(work: pathlib.Path, config: pathlib.Path, broker: LocalMosquitto) -> tuple[list[dict[str, Any]], str]:
    """``edge-agent run`` until its camera's frames end; the first revision of every tag event, and its output."""
    client, got = subscribe(broker.url, "edge/box1/+/tags")
    try:
        out = edge_agent(work, "run", "--config", str(config), "--log-level", "warning")
        time.sleep(1.0)  # the last acknowledged events reach the subscriber
    finally:
        client.loop_stop()
        client.disconnect()
    first = {d["event_id"]: d for d in got.tags if d.get("revision", 1) == 1}
    return list(first.values()), out


@dataclasses.dataclass(frozen=True)
class Score:
    frames: int
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    @property
    def pass_f1(self) -> float:
        return 2 * self.tn / (2 * self.tn + self.fp + self.fn) if self.tn else 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


def score(docs: Sequence[dict[str, Any]], truths: Sequence[frozenset[str]]) -> Score:
    """pass/defect against the truth of each event's frame (``sequence`` is 1-based); ``uncertain`` (no verdict:
    the VLM did not answer) counts as a miss of whatever the frame was."""
    tp = fp = fn = tn = 0
    for doc in docs:
        defect = bool(truths[doc["sequence"] - 1])
        said = doc["verdict"]
        if said == "defect":
            tp, fp = tp + defect, fp + (not defect)
        elif said == "pass":
            fn, tn = fn + defect, tn + (not defect)
        else:
            fn, fp = fn + defect, fp + (not defect)
    return Score(len(docs), tp, fp, fn, tn)


def learn_counts(out: str) -> dict[str, int]:
    match = re.search(r"^learn mode, camera line3: (.+)$", out, re.M)
    if match is None:
        raise SystemExit(f"edge-agent run printed no learn-mode counts:\n{out[-2000:]}")
    return {k: int(n) for k, n in (item.rsplit(" ", 1) for item in match[1].split(", "))}


def inspected(out: str) -> int:
    match = re.search(r"^inspected (\d+) frames", out, re.M)
    return int(match[1]) if match else 0


@dataclasses.dataclass
class Services:
    broker: LocalMosquitto
    gateway: str
    oracle: TruthOracle


@contextlib.contextmanager
def services(work: pathlib.Path, oracle: TruthOracle) -> Iterator[Services]:
    """Mosquitto, the simulated VLM (in this process) and ``edge-agent gateway`` (a process) with the taxonomy."""
    with LocalMosquitto() as broker, FakeOllama(answer_fn=oracle) as fake:
        port = free_port()
        (work / "gateway.yaml").write_text(yaml.safe_dump({
            "listen": f"127.0.0.1:{port}", "taxonomy": "taxonomy.yaml",
            "ollama": {"host": fake.url, "timeout_s": 30.0}, "summary_interval_s": 0,
            "metrics": {"enabled": False}}, sort_keys=False))
        print(f"   $ edge-agent gateway --config gateway.yaml   (Ollama: the simulated VLM at {fake.url})", flush=True)
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "gateway", "--config", "gateway.yaml"],
                                cwd=work, env=_env(work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            started = time.monotonic()
            for line in proc.stdout:
                if "listening on" in line:
                    print("   " + line.strip(), flush=True)
                    break
                if time.monotonic() - started > 60:
                    raise SystemExit("edge-agent gateway did not start within 60 s")
            else:
                raise SystemExit(f"edge-agent gateway exited with {proc.wait()}")
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
            yield Services(broker, f"127.0.0.1:{port}", oracle)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=pathlib.Path, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--learn-seed", type=int, default=5, help="the learn-mode camera's scene seed")
    parser.add_argument("--fresh-seed", type=int, default=9, help="the fresh run's scene seed (frames never seen)")
    parser.add_argument("--learn-frames", type=int, default=800, help="frames of the learn-mode camera")
    parser.add_argument("--fresh-frames", type=int, default=400, help="frames of the fresh run")
    parser.add_argument("--fps", type=float, default=8.0, help="the camera's frame rate")
    parser.add_argument("--sample-per-minute", type=float, default=120.0, help="learn.sample_per_minute")
    parser.add_argument("--scene-changes-per-minute", type=float, default=120.0,
                        help="learn.scene_changes_per_minute (every surface frame is a scene change)")
    parser.add_argument("--error-rate", type=float, default=0.05, help="share of frames the simulated VLM gets wrong")
    parser.add_argument("--vlm-seed", type=int, default=3, help="seed of the simulated VLM's errors")
    parser.add_argument("--imgsz", default="320x320", help="models train --imgsz (height x width)")
    parser.add_argument("--epochs", type=int, default=4, help="models train --epochs")
    parser.add_argument("--time", type=float, default=0.4, help="models train --time (hours)")
    parser.add_argument("--batch", type=int, default=16, help="models train --batch")
    parser.add_argument("--lr0", type=float, help="models train --lr0 (default: the command's own)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="dataset export --val-fraction")
    parser.add_argument("--json", type=pathlib.Path, help="also write the numbers here")
    return parser.parse_args(argv)


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
    with steps.run("edge-agent models train --new-classes (and its INT8 gate)"):
        train_out = edge_agent(work, "models", "train", "--data", "data", "--base", str(BASE), "--new-classes",
                               "--imgsz", args.imgsz, "--epochs", str(args.epochs), "--time", f"{args.time:g}",
                               "--batch", str(args.batch), *(("--lr0", f"{args.lr0:g}") if args.lr0 else ()),
                               "--taxonomy", "taxonomy.yaml", "--out", "candidate",
                               ok=(0, 1))  # 1: the INT8 gate refused; the FP32 candidate is promoted then
    epoch_lines = [ln for ln in train_out.splitlines() if re.match(r"^\s*epoch\s", ln, re.I)]
    gate_lines = [ln for ln in train_out.splitlines() if "gate" in ln.lower() or "uncertain" in ln.lower()
                  or "val accuracy" in ln.lower()]
    for line in epoch_lines + gate_lines[-3:]:
        print("   " + line, flush=True)
    with steps.run("edge-agent models promote --allow-new-classes"):
        promote_out = edge_agent(work, "models", "promote", "candidate", "--config", str(learn_cfg), "--val",
                                 "data", "--allow-new-classes", ok=(0, 1))  # 1: refused (the cameras keep learning)
    for line in promote_out.splitlines():
        if line.startswith(("candidate:", "accepted", "installed", "accuracy", "REFUSED", "refused")):
            print("   " + line, flush=True)
    refused = re.search(r"^REFUSED: (.+)$", promote_out, re.M)
    return split_counts, epoch_lines, gate_lines, refused[1] if refused else None


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
    settings = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()}
    print(f"escalation statuses after: {statuses}; prefilter model(s): {', '.join(sorted(model_ids))}")
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
                  "statuses": statuses, "models": sorted(model_ids)},
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
