#!/usr/bin/env python3
"""The whole agent against the bare model loop and against ultralytics' predictor, in one run.

    python scripts/bench_pipeline.py [--quick] [--rounds 4] [--frames 400] [--size 1280x960] [--setups 1x2 2x1]
    python scripts/bench_pipeline.py --breakdown        # where one frame's time goes, stage by stage

One video (the synthetic conveyor scene, rendered at 640x480 and scaled to ``--size``, the frame a
camera gives; MPEG-4 in .mp4) and, for each model (``--models``: FP32, then INT8), these sides, each in
its own process so that none inherits another's threads, imports or memory:

* **bare**: the frames decoded and letterboxed beforehand, then nothing but ``session.run`` on the
  agent's own session (same file, same session options) in a loop: the model's own speed here, at
  each intra-op thread count (1, every core, and those of the setups);
* **agent**: the whole agent (``AgentService``: the video file as a camera read at full speed, the
  grabber thread decoding, prefilter, triage, the SQLite outbox, a real Mosquitto, escalation off),
  frames inspected per second; every event must be acknowledged by the broker by shutdown;
* **ultralytics**: ``YOLO(model.onnx).predict(video, stream=True)`` (the ``train`` extra), the same
  ONNX file, same score threshold, IoU and image size, frames per second as the results come.

``--setups`` takes one or more agent settings ``TxR``: ``model.intra_op_threads`` T and
``model.concurrent_runs`` R (default: the agent's default, and 2x1, one run on two threads, what ONNX
Runtime itself picks on two cores). For a setup with R > 1 a bare side runs R ``session.run`` loops at
once on the one session (``bare TxR``): the most this box gets out of the model, the video decoding
left out. Sides run in rounds, their order rotating each round, so load from other processes hits all
of them alike; rates are measured after the first ``--warmup`` frames. Printed: every round's frames
per second, the medians, and the ratios (each round's ratio of two sides measured next to each other,
and the median over rounds): agent / the fastest bare loop (the bar: 0.9), agent / bare with R loops,
agent / ultralytics on the same file, agent on INT8 / ultralytics on FP32, INT8 / FP32; the box
agreement of agent and ultralytics (boxes matched by class and IoU >= 0.5, confidence differences);
the resident memory (peak RSS) of the agent process with one camera and with four cameras on the same
video.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_pipeline_workers import WORKERS  # noqa: E402  (beside this script)

FP32 = REPO / "models" / "conveyor-yolov8n.onnx"
INT8 = REPO / "models" / "conveyor-yolov8n.int8.onnx"
MATCH_IOU = 0.5


# ---------------------------------------------------------------------------------------------- helpers


def parse_setup(text: str) -> tuple[int, int]:
    """``TxR`` (or ``T``): intra-op threads T, concurrent runs R (1 when left out)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or not all(1 <= v <= 64 for v in parts):
        raise argparse.ArgumentTypeError(f"--setups takes THREADSxRUNS, e.g. 1x2 or 2x1 (each 1..64), got {text!r}")
    return parts[0], parts[1] if len(parts) == 2 else 1


def setup_name(setup: tuple[int, int]) -> str:
    return f"{setup[0]}x{setup[1]}"


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be WIDTHxHEIGHT, e.g. 1280x960, got {text!r}") from None
    if not (64 <= w <= 7680 and 64 <= h <= 4320):
        raise argparse.ArgumentTypeError(f"--size {text}: each side must be 64..7680 x 64..4320")
    return w, h


def write_video(path: pathlib.Path, frames: int, size: tuple[int, int]) -> pathlib.Path:
    """The moving conveyor (as the model was trained on it, 640x480), scaled to a camera's frame size."""
    import cv2

    from agent.capture.synthetic import ConveyorScene

    scene = ConveyorScene(seed=11)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 15.0, size)
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write an MPEG-4 video to {path}")
    for _ in range(frames):
        image = scene.next_frame()[0]
        writer.write(image if image.shape[1::-1] == size else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
    writer.release()
    return path


# ---------------------------------------------------------------------------------------------- driver


def run_worker(kind: str, model: pathlib.Path, common: list[str], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", kind, "--model", str(model),
           *common, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{kind} worker on {model.name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def load_text() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (5 min {five:.2f})"


def med(values: list[float]) -> float:
    return float(statistics.median(values))


def fmt_rounds(values: list[float], spec: str = ".1f") -> str:
    return " ".join(format(v, spec) for v in values)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run: 2 rounds of 300 frames, no 4-camera RSS round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--frames", type=int, default=400, help="frames in the video")
    ap.add_argument("--warmup", type=int, default=20, help="frames at the start of every side that are not timed")
    ap.add_argument("--size", type=parse_size, default=(1280, 960), help="the camera's frame size, WxH")
    ap.add_argument("--setups", type=parse_setup, nargs="+", default=None,
                    help="agent settings THREADSxRUNS (model.intra_op_threads x model.concurrent_runs) compared side "
                    "by side (default: the agent's default and 2x1); --breakdown uses the first one's threads")
    ap.add_argument("--models", nargs="+", type=pathlib.Path, default=[FP32, INT8])
    ap.add_argument("--no-ultralytics", action="store_true", help="skip the ultralytics side (no train extra)")
    ap.add_argument("--breakdown", action="store_true", help="only time each stage of one frame, per model")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--model", type=pathlib.Path, help=argparse.SUPPRESS)
    ap.add_argument("--video", type=pathlib.Path, help=argparse.SUPPRESS)
    ap.add_argument("--broker", help=argparse.SUPPRESS)
    ap.add_argument("--cameras", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--imgsz", type=int, default=320, help=argparse.SUPPRESS)
    return ap


def main() -> int:
    args = _parser().parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)), flush=True)
        return 0
    for model in args.models:
        if not model.is_file():
            print(f"model file {model} does not exist; expected an ONNX detector (e.g. {FP32})", file=sys.stderr)
            return 2
    if args.setups is None:
        from agent.config.models import ModelConfig

        default = ModelConfig()
        args.setups = list(dict.fromkeys([(default.intra_op_threads, default.concurrent_runs), (2, 1)]))
    if args.quick:
        args.rounds, args.frames = min(args.rounds, 2), min(args.frames, 300)
    if args.rounds < 1 or args.frames < args.warmup + 20:
        print(f"--rounds must be >= 1 and --frames >= --warmup + 20 ({args.warmup + 20})", file=sys.stderr)
        return 2
    if not args.no_ultralytics:
        try:
            import ultralytics  # noqa: F401
        except ImportError:
            print("ultralytics is not installed (pip install -e '.[train]'); or pass --no-ultralytics",
                  file=sys.stderr)
            return 2

    from agent.publish.local_broker import LocalMosquitto

    with LocalMosquitto() as mosquitto, tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        video = write_video(pathlib.Path(tmp) / "conveyor.mp4", args.frames, args.size)
        common = ["--video", str(video), "--broker", mosquitto.url, "--warmup", str(args.warmup),
                  "--frames", str(args.frames)]
        size = f"{args.size[0]}x{args.size[1]}"
        setups = " and ".join(setup_name(t) for t in args.setups)
        print(f"{os.cpu_count()} cores, {args.frames} frames of {size} MPEG-4, agent setups (intra-op threads x "
              f"concurrent runs) {setups}, "
              f"{args.rounds} rounds, first {args.warmup} frames of every side untimed; {load_text()}", flush=True)
        if args.breakdown:
            return breakdown(args, common)
        return compare(args, common)


def breakdown(args: argparse.Namespace, common: list[str]) -> int:
    print("median ms per frame, one thread running every stage in turn (the agent overlaps decode with the rest):")
    for model in args.models:
        result = run_worker("breakdown", model, [*common, "--threads", str(args.setups[0][0])])
        total = sum(result["ms"].values())
        cells = "  ".join(f"{s} {v:.2f}" for s, v in result["ms"].items())
        print(f"  {model.name:<28} {cells}  | sum {total:.2f} ms; session.run is "
              f"{result['ms']['session.run'] / total:.0%}")
    return 0


@dataclasses.dataclass
class Rounds:
    """What the rounds measured, by (model file name, side label)."""

    fps: dict[tuple[str, str], list[float]] = dataclasses.field(default_factory=dict)
    boxes: dict[tuple[str, str], dict[str, list[list[float]]]] = dataclasses.field(default_factory=dict)
    cpu: dict[tuple[str, str], dict[str, float]] = dataclasses.field(default_factory=dict)  # by thread, last round
    rss: dict[int, list[float]] = dataclasses.field(default_factory=lambda: {1: [], 4: []})  # peak, by cameras
    rss_running: dict[int, list[float]] = dataclasses.field(default_factory=lambda: {1: [], 4: []})  # frames flowing
    loads: list[str] = dataclasses.field(default_factory=list)


Side = tuple[str, str, int, int]  # (label, worker, intra-op threads, concurrent runs)


def compare(args: argparse.Namespace, common: list[str]) -> int:
    # ultralytics runs with its own session options
    bare_threads = sorted({1, os.cpu_count() or 1, *(t for t, _r in args.setups)})
    sides: list[Side] = [(f"bare t{t}", "bare", t, 1) for t in bare_threads]
    sides += [(f"bare {setup_name(s)}", "bare", s[0], s[1]) for s in args.setups if s[1] > 1]
    sides += [(f"agent {setup_name(s)}", "agent", s[0], s[1]) for s in args.setups]
    if not args.no_ultralytics:
        sides.append(("ultralytics", "ultralytics", 0, 1))
    measured = run_rounds(args, common, sides)
    print("\nframes per second, per round:")
    for (name, label), values in measured.fps.items():
        print(f"  {name:<28} {label:<12} median {med(values):7.1f}   rounds: {fmt_rounds(values)}")
    checks = print_ratios(args, measured.fps, sides, bare_threads)
    print_details(args, measured, checks)
    return 0


def run_rounds(args: argparse.Namespace, common: list[str], sides: list[Side]) -> Rounds:
    """Every side on every model, --rounds times, one worker process each."""
    from agent.prefilter.gate_record import file_precision

    precision = {m: file_precision(m) for m in args.models}
    first = args.setups[0]
    out = Rounds()
    for r in range(args.rounds):
        # the sides of one model run back to back (their ratios matter most), the side that goes first
        # rotates every round and the models swap places every other round
        models = args.models if r % 2 == 0 else args.models[::-1]
        turn = sides[r % len(sides):] + sides[:r % len(sides)]
        line = []
        for model in models:
            for label, kind, threads, runs in turn:
                result = run_worker(kind, model, [*common, "--threads", str(threads), "--runs", str(runs)])
                out.fps.setdefault((model.name, label), []).append(result["fps"])
                line.append(f"{precision[model]} {label} {result['fps']:.1f}")
                if "cpu_ms_per_frame" in result:
                    out.cpu[(model.name, label)] = result["cpu_ms_per_frame"]
                if "boxes" in result and (kind != "agent" or (threads, runs) == first):
                    out.boxes[(model.name, kind)] = result["boxes"]
                if kind == "agent" and model == args.models[-1] and (threads, runs) == first:
                    out.rss[1].append(result["rss_peak_mb"])
                    out.rss_running[1].append(result["rss_running_mb"])
        if not args.quick and r == 0:
            four = run_worker("agent", args.models[-1], [*common, "--threads", str(first[0]), "--runs",
                                                         str(first[1]), "--cameras", "4"])
            out.rss[4].append(four["rss_peak_mb"])
            out.rss_running[4].append(four["rss_running_mb"])
            out.fps.setdefault(("4 cameras", "agent"), []).append(four["fps"])
        out.loads.append(load_text())
        print(f"  round {r + 1}/{args.rounds}: {', '.join(line)} frames/s; {out.loads[-1]}", flush=True)
    return out


def print_ratios(args: argparse.Namespace, fps: dict[tuple[str, str], list[float]], sides: list[Side],
                 bare_threads: list[int]) -> list[tuple[str, str, float, float]]:
    """The ratios of sides measured next to each other; returns the ones with a bar: (setup, what, value, bar)."""
    names = [m.name for m in args.models]
    print("\nratios (median of the per-round ratios; per round):")
    checks: list[tuple[str, str, float, float]] = []

    def show(text: str, a: tuple[str, str], b: tuple[str, str], bar: float | None = None, setup: str = "") -> None:
        per_round = [x / y for x, y in zip(fps[a], fps[b], strict=True)]
        value = med(per_round)
        verdict = "" if bar is None else f"  must be >= {bar:g}: {'yes' if value >= bar else 'NO'}"
        print(f"  {text:<62} {value:5.2f}x   rounds: {fmt_rounds(per_round, '.2f')}{verdict}")
        if bar is not None:
            checks.append((setup, text, value, bar))

    fastest = {name: max((f"bare t{t}" for t in bare_threads), key=lambda lb, name=name: med(fps[(name, lb)]))
               for name in names}
    for setup in args.setups:
        sn, agent = setup_name(setup), f"agent {setup_name(setup)}"
        for name in names:
            show(f"{agent} / the fastest bare loop ({fastest[name]}), {name}", (name, agent),
                 (name, fastest[name]), 0.9, sn)
            if setup[1] > 1:
                show(f"{agent} / bare {sn} ({setup[1]} loops at once), {name}", (name, agent), (name, f"bare {sn}"))
        if not args.no_ultralytics:
            for name in names:
                show(f"{agent} / ultralytics, both {name}", (name, agent), (name, "ultralytics"), 1.1, sn)
            if len(names) > 1:
                show(f"{agent} {names[-1]} / ultralytics {names[0]}", (names[-1], agent), (names[0], "ultralytics"),
                     2.0, sn)
    if not args.no_ultralytics:
        for name in names:
            show(f"{fastest[name]} / ultralytics, both {name}", (name, fastest[name]), (name, "ultralytics"))
    if len(names) > 1:
        for label, _kind, _t, _r in sides:
            show(f"{label}: {names[-1]} / {names[0]}", (names[-1], label), (names[0], label))
    return checks


def print_details(args: argparse.Namespace, m: Rounds, checks: list[tuple[str, str, float, float]]) -> None:
    """Box agreement with ultralytics, CPU per thread, resident memory, load, and which ratios hold."""
    from agent.tooling.evaluation.agreement import box_agreement

    names, first = [model.name for model in args.models], args.setups[0]
    if not args.no_ultralytics:
        print(f"\nbox agreement, agent {setup_name(first)} vs ultralytics (same class, IoU >= {MATCH_IOU}, last round, "
              "every frame):")
        for name in names:
            agree = box_agreement(m.boxes[(name, "agent")], m.boxes[(name, "ultralytics")], MATCH_IOU)
            print(f"  {name:<28} matched {agree['matched']}, only agent {agree['only_a']}, only ultralytics "
                  f"{agree['only_b']}; IoU mean {agree['mean_iou']:.4f} min {agree['min_iou']:.4f}; "
                  f"|confidence difference| mean {agree['mean_conf_diff']:.4f} max {agree['max_conf_diff']:.4f}")
    print("\nthe agent's CPU time per frame by thread, ms (last round; 'native': threads Python did not start, e.g. "
          "FFmpeg's decoding threads; resolution 10 ms over the run):")
    for (name, label), by_thread in m.cpu.items():
        cells = ", ".join(f"{t} {v:.2f}" for t, v in by_thread.items())
        print(f"  {name:<28} {label:<12} total {sum(by_thread.values()):5.2f}: {cells}")
    print(f"\nresident memory of the agent process, {names[-1]}, setup {setup_name(first)} (peak RSS over its life, "
          "model loading included; RSS while frames flow):")
    print(f"  one camera:   peak median {med(m.rss[1]):6.1f} MB (rounds: {fmt_rounds(m.rss[1])}), running "
          f"{med(m.rss_running[1]):6.1f} MB; must be <= 300 MB: {'yes' if med(m.rss[1]) <= 300 else 'NO'}")
    if m.rss[4]:
        print(f"  four cameras: peak {m.rss[4][0]:6.1f} MB, running {m.rss_running[4][0]:6.1f} MB "
              f"({m.fps[('4 cameras', 'agent')][0]:.1f} frames/s over all four)")
    print(f"\nload per round: {'; '.join(m.loads)}")
    for setup in args.setups:
        mine = [c for c in checks if c[0] == setup_name(setup)]
        failed = [c for c in mine if c[2] < c[3]]
        print(f"must-shows, agent {setup_name(setup)}: {len(mine) - len(failed)} of {len(mine)} ratios hold"
              + ("" if not failed else "; not: " + ", ".join(c[1] for c in failed)))


if __name__ == "__main__":
    raise SystemExit(main())
