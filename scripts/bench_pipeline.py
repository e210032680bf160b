#!/usr/bin/env python3
"""The whole agent against the bare model loop and against ultralytics' predictor, in one run.

    python scripts/bench_pipeline.py [--quick] [--rounds 4] [--frames 400] [--size 1280x960] [--setups 1x2 2x1]
                                     [--runtimes onnxruntime openvino] [--ultralytics-ov DIR]
    python scripts/bench_pipeline.py --breakdown --size 1280x960 1920x1080 --codec h264 mjpg
                                                        # where one frame's time goes, stage by stage
    python scripts/bench_pipeline.py --memory [--rounds 3] [--runtimes openvino]
                                                        # only the resident memory line, on each model
    (the ultralytics sides need the train extra: PYTHONPATH=$PWD /work/venv-train/bin/python scripts/...)

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
  ONNX file, same score threshold, IoU and image size, frames per second as the results come;
* **ultralytics ov**: the same predictor on ultralytics' own OpenVINO export of the same weights
  (``YOLO(weights).export(format="openvino")``, the path ultralytics recommends on CPUs; the weights are
  rebuilt from the FP32 ONNX file, agent/tooling/training/onnx_to_yolo.py): FP32 on the FP32 row, its
  NNCF INT8 export (``int8=True``, calibrated on a local ``dataset synth`` folder, offline) on the INT8 row.

``--runtimes`` runs the bare and agent sides on ONNX Runtime and on OpenVINO (``model.runtime``;
labels ``ov bare TxR``, ``ov agent TxR``); default: both where the openvino extra is installed.
``--precision`` is the OpenVINO bare and agent sides' ``model.precision`` (default auto: float layers in
f32; bf16: in BF16 where the CPU has it). Printed: the precision every OpenVINO side's float layers ran
in, ultralytics' included (its compiled model's INFERENCE_PRECISION_HINT: it sets none on x86, so the
CPU plugin's default, bf16 on a CPU with AVX512_BF16 or AMX).

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

``--breakdown`` times each stage of one frame (grab = FFmpeg reading and decoding the packet, retrieve =
the picture converted to BGR, then letterbox, the model, decode, triage and event, outbox and MQTT) for
every ``--size`` x ``--codec`` (``mp4v``, ``mjpg``, ``h264``: H.264 is encoded with GStreamer's x264enc
through Debian's python3-gi, as a camera sends it: no B-frames, a key frame a second) and runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_pipeline_report import Rounds, Side, fmt_rounds, med, print_details, print_ratios, setup_name  # noqa: E402
from bench_pipeline_video import CODECS, write_video  # noqa: E402  (beside this script)
from bench_pipeline_workers import WORKERS  # noqa: E402

FP32 = REPO / "models" / "conveyor-yolov8n.onnx"
INT8 = REPO / "models" / "conveyor-yolov8n.int8.onnx"
RUNTIMES = ("onnxruntime", "openvino")
RSS_LINE_MB = 300  # the agent's peak resident memory with one camera must stay under this


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


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be WIDTHxHEIGHT, e.g. 1280x960, got {text!r}") from None
    if not (64 <= w <= 7680 and 64 <= h <= 4320):
        raise argparse.ArgumentTypeError(f"--size {text}: each side must be 64..7680 x 64..4320")
    return w, h


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


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run: 2 rounds of 300 frames, no 4-camera RSS round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--frames", type=int, default=400, help="frames in the video")
    ap.add_argument("--warmup", type=int, default=20, help="frames at the start of every side that are not timed")
    ap.add_argument("--size", type=parse_size, nargs="+", default=[(1280, 960)],
                    help="the camera's frame size, WxH (--breakdown: each one given; else the first)")
    ap.add_argument("--codec", choices=CODECS, nargs="+", default=["mp4v"],
                    help="the video's codec (--breakdown: each one given; else the first)")
    ap.add_argument("--setups", type=parse_setup, nargs="+", default=None,
                    help="agent settings THREADSxRUNS (model.intra_op_threads x model.concurrent_runs) compared side "
                    "by side (default: the agent's default and 2x1); --breakdown uses the first one's threads")
    ap.add_argument("--models", nargs="+", type=pathlib.Path, default=[FP32, INT8])
    ap.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=None,
                    help="model.runtime of the bare and agent sides (default: both where openvino is installed)")
    ap.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                    help="model.precision of the OpenVINO bare and agent sides (bf16: float layers in BF16 where the "
                         "CPU has it; auto: f32)")
    ap.add_argument("--no-ultralytics", action="store_true", help="skip the ultralytics sides (no train extra)")
    ap.add_argument("--no-ultralytics-ov", action="store_true", help="skip ultralytics on its OpenVINO exports")
    ap.add_argument("--ultralytics-ov", type=pathlib.Path, default=None,
                    help="folder for ultralytics' OpenVINO exports, reused when there (default: made in the run's "
                    "temp folder, about a minute)")
    ap.add_argument("--breakdown", action="store_true", help="only time each stage of one frame, per model")
    ap.add_argument("--memory", action="store_true",
                    help="only the resident memory line: the agent (first setup, first runtime) on each model with one "
                    "camera (--rounds times) and four cameras (once), no other side")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--model", type=pathlib.Path, help=argparse.SUPPRESS)
    ap.add_argument("--video", type=pathlib.Path, help=argparse.SUPPRESS)
    ap.add_argument("--broker", help=argparse.SUPPRESS)
    ap.add_argument("--cameras", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--runtime", default="onnxruntime", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--imgsz", type=int, default=320, help=argparse.SUPPRESS)
    return ap


def _check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments or this environment, or None; fills in the defaults."""
    from agent.prefilter.openvino_session import openvino_version

    for model in args.models:
        if not model.is_file():
            return f"model file {model} does not exist; expected an ONNX detector (e.g. {FP32})"
    if args.setups is None:
        from agent.config.models import ModelConfig

        default = ModelConfig()
        args.setups = list(dict.fromkeys([(default.intra_op_threads, default.concurrent_runs), (2, 1)]))
    if args.runtimes is None:
        args.runtimes = list(RUNTIMES) if openvino_version() else ["onnxruntime"]
    if "openvino" in args.runtimes and not openvino_version():
        return "--runtimes openvino: the openvino extra is not installed (pip install 'edge-agent[openvino]')"
    if args.quick:
        args.rounds, args.frames = min(args.rounds, 2), min(args.frames, 300)
    if args.rounds < 1 or args.frames < args.warmup + 20:
        return f"--rounds must be >= 1 and --frames >= --warmup + 20 ({args.warmup + 20})"
    if not args.no_ultralytics and not args.breakdown and not args.memory:
        try:
            import ultralytics  # noqa: F401
        except ImportError:
            return ("ultralytics is not installed (the train extra; here: PYTHONPATH=$PWD /work/venv-train/bin/python "
                    "scripts/bench_pipeline.py ...); or pass --no-ultralytics")
    return None


def main() -> int:
    args = _parser().parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)), flush=True)
        return 0
    problem = _check_args(args)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2

    from agent.publish.local_broker import LocalMosquitto

    with LocalMosquitto() as mosquitto, tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        if args.breakdown:
            return breakdown(args, mosquitto.url, pathlib.Path(tmp))
        size = args.size[0]
        video = write_video(pathlib.Path(tmp) / "conveyor", args.frames, size, args.codec[0])
        common = ["--video", str(video), "--broker", mosquitto.url, "--warmup", str(args.warmup),
                  "--frames", str(args.frames), "--precision", args.precision]
        if args.memory:
            return memory(args, common)
        setups = " and ".join(setup_name(t) for t in args.setups)
        print(f"{os.cpu_count()} cores, {args.frames} frames of {size[0]}x{size[1]} {args.codec[0]}, agent setups "
              f"(intra-op threads x concurrent runs) {setups}, runtimes {', '.join(args.runtimes)}, "
              f"{args.rounds} rounds, first {args.warmup} frames of every side untimed; {load_text()}", flush=True)
        exports: dict[str, str] = {}
        if not args.no_ultralytics and not args.no_ultralytics_ov:
            exports = ultralytics_exports(args, common, pathlib.Path(tmp))
        return compare(args, common, exports)


def ultralytics_exports(args: argparse.Namespace, common: list[str], tmp: pathlib.Path) -> dict[str, str]:
    """ultralytics' OpenVINO exports of the FP32 weights, by precision (fp32, int8 where its export worked)."""
    folder = args.ultralytics_ov or tmp / "ultralytics-ov"
    done = run_worker("export_ov", FP32, [*common, "--out", str(folder)])
    out = {k: str(v) for k, v in done.items() if k in ("fp32", "int8") and v}
    print(f"ultralytics' OpenVINO exports of {FP32.name}'s weights: "
          + ", ".join(f"{k} {v}" for k, v in out.items())
          + (f"; int8 not made: {done['int8_error']}" if "int8_error" in done else ""), flush=True)
    return out


def breakdown(args: argparse.Namespace, broker: str, tmp: pathlib.Path) -> int:
    threads = str(args.setups[0][0])
    frames = min(args.frames, 150)
    print(f"{os.cpu_count()} cores; median ms per frame of {frames} ({args.warmup} untimed), one thread running every "
          f"stage in turn (the agent overlaps decoding with the rest), {threads} intra-op thread(s); {load_text()}")
    for w, h in args.size:
        for codec in args.codec:
            video = write_video(tmp / f"conveyor-{w}x{h}-{codec}", frames, (w, h), codec)
            mb = video.stat().st_size / 1e6
            print(f"{w}x{h} {codec} ({mb * 8 / (frames / 15):.1f} Mbit/s at 15 fps):", flush=True)
            for model in args.models:
                for runtime in args.runtimes:
                    common = ["--video", str(video), "--broker", broker, "--warmup", str(args.warmup), "--frames",
                              str(frames), "--threads", threads, "--runtime", runtime]
                    result = run_worker("breakdown", model, common)
                    ms = result["ms"]
                    total, run = sum(ms.values()), ms["session.run"]
                    cells = "  ".join(f"{s} {v:.2f}" for s, v in ms.items())
                    print(f"  {model.name:<27} {runtime:<11} {cells}  | sum {total:.2f} ms; model {run / total:.0%}, "
                          f"around it {total - run:.2f} ms", flush=True)
    print(f"{load_text()} at the end")
    return 0


def memory(args: argparse.Namespace, common: list[str]) -> int:
    """The resident memory line alone: the agent's peak RSS (VmHWM over its life, model loading included) and its
    RSS while frames flow, with one camera and with four, on each model; exit 1 when a one-camera median is over
    the line."""
    threads, runs = args.setups[0]
    runtime = args.runtimes[0]
    print(f"resident memory of the agent process ({runtime}, setup {setup_name(args.setups[0])}, {args.frames} frames "
          f"of {args.size[0][0]}x{args.size[0][1]} {args.codec[0]}); {load_text()}", flush=True)
    over = False
    for model in args.models:
        one = [run_worker("agent", model, [*common, "--threads", str(threads), "--runs", str(runs), "--runtime",
                                           runtime]) for _ in range(args.rounds)]
        peak = med([r["rss_peak_mb"] for r in one])
        over |= peak > RSS_LINE_MB
        print(f"  {model.name:<28} one camera:   peak median {peak:6.1f} MB (rounds: "
              f"{fmt_rounds([r['rss_peak_mb'] for r in one])}), running {med([r['rss_running_mb'] for r in one]):6.1f}"
              f" MB; must be <= {RSS_LINE_MB} MB: {'yes' if peak <= RSS_LINE_MB else 'NO'}", flush=True)
        if not args.quick:
            four = run_worker("agent", model, [*common, "--threads", str(threads), "--runs", str(runs), "--cameras",
                                               "4", "--runtime", runtime])
            print(f"  {model.name:<28} four cameras: peak {four['rss_peak_mb']:6.1f} MB, running "
                  f"{four['rss_running_mb']:6.1f} MB ({four['fps']:.1f} frames/s over all four)", flush=True)
    print(f"{load_text()} at the end")
    return 1 if over else 0


def build_sides(args: argparse.Namespace, exports: dict[str, str]) -> tuple[list[Side], list[int]]:
    bare_threads = sorted({1, os.cpu_count() or 1, *(t for t, _r in args.setups)})
    sides: list[Side] = []
    if "onnxruntime" in args.runtimes:
        sides += [(f"bare t{t}", "bare", t, 1, "onnxruntime") for t in bare_threads]
        sides += [(f"bare {setup_name(s)}", "bare", s[0], s[1], "onnxruntime") for s in args.setups if s[1] > 1]
        sides += [(f"agent {setup_name(s)}", "agent", s[0], s[1], "onnxruntime") for s in args.setups]
    if "openvino" in args.runtimes:
        sides += [(f"ov bare {setup_name(s)}", "bare", s[0], s[1], "openvino") for s in args.setups]
        sides += [(f"ov agent {setup_name(s)}", "agent", s[0], s[1], "openvino") for s in args.setups]
    if not args.no_ultralytics:
        sides.append(("ultralytics", "ultralytics", 0, 1, "onnx"))
        if exports:
            sides.append(("ultralytics ov", "ultralytics", 0, 1, "openvino"))
    return sides, bare_threads


def compare(args: argparse.Namespace, common: list[str], exports: dict[str, str]) -> int:
    sides, bare_threads = build_sides(args, exports)
    measured = run_rounds(args, common, sides, exports)
    print("\nframes per second, per round:")
    for (name, label), values in measured.fps.items():
        print(f"  {name:<28} {label:<16} median {med(values):7.1f}   rounds: {fmt_rounds(values)}")
    checks = print_ratios(args, measured.fps, sides, bare_threads)
    print_details(args, measured, checks)
    return 0


def run_rounds(args: argparse.Namespace, common: list[str], sides: list[Side], exports: dict[str, str]) -> Rounds:
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
            for label, kind, threads, runs, runtime in turn:
                target = model
                if kind == "ultralytics" and runtime == "openvino":
                    if precision[model] not in exports:
                        continue  # its INT8 export did not work here: said above
                    target = pathlib.Path(exports[precision[model]])
                result = run_worker(kind, target, [*common, "--threads", str(threads), "--runs", str(runs),
                                                   "--runtime", runtime])
                out.fps.setdefault((model.name, label), []).append(result["fps"])
                line.append(f"{precision[model]} {label} {result['fps']:.1f}")
                if "runs_on" in result and runtime == "openvino":
                    out.runs_on[(model.name, label)] = result["runs_on"]
                if "cpu_ms_per_frame" in result:
                    out.cpu[(model.name, label)] = result["cpu_ms_per_frame"]
                if "boxes" in result and (kind != "agent" or (threads, runs) == first):
                    out.boxes[(model.name, label if kind == "ultralytics" else f"{runtime} agent")] = result["boxes"]
                if kind == "agent" and model == args.models[-1] and (threads, runs) == first \
                        and runtime == args.runtimes[0]:
                    out.rss[1].append(result["rss_peak_mb"])
                    out.rss_running[1].append(result["rss_running_mb"])
        if not args.quick and r == 0:
            four = run_worker("agent", args.models[-1], [*common, "--threads", str(first[0]), "--runs",
                                                         str(first[1]), "--cameras", "4", "--runtime",
                                                         args.runtimes[0]])
            out.rss[4].append(four["rss_peak_mb"])
            out.rss_running[4].append(four["rss_running_mb"])
            out.fps.setdefault(("4 cameras", "agent"), []).append(four["fps"])
        out.loads.append(load_text())
        print(f"  round {r + 1}/{args.rounds}: {', '.join(line)} frames/s; {out.loads[-1]}", flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
