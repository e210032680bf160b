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
import contextlib
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

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


def rate(stamps: list[float], warmup: int) -> float:
    """Frames per second from the completion times of consecutive frames, after ``warmup`` frames."""
    if len(stamps) < warmup + 2:
        raise SystemExit(f"only {len(stamps)} frames were timed; need more than {warmup + 1} (raise --frames)")
    return (len(stamps) - 1 - warmup) / (stamps[-1] - stamps[warmup])


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) of every live thread of this process, by Python thread name (threads
    Python did not start, e.g. onnxruntime's pool, are ``native``)."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in pathlib.Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            stat = (task / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            name = names.get(int(task.name), "native")
            name = "grab" if name.startswith("grab-") else name
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_per_frame(marks: list[dict[str, float]], frames: int) -> dict[str, float]:
    if len(marks) != 2:
        return {}
    return {name: (marks[1][name] - marks[0].get(name, 0.0)) * 1000.0 / frames for name in sorted(marks[1])
            if marks[1][name] > marks[0].get(name, 0.0)}


def rss_mb(field: str = "VmHWM") -> float:
    """This process's resident memory: ``VmHWM`` the peak so far (the kernel's high-water mark), ``VmRSS`` now."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------------- workers
# Each runs in its own process (``--worker KIND``) and prints one JSON line.


def worker_bare(args: argparse.Namespace) -> dict[str, Any]:
    import cv2

    from agent.config.models import ModelConfig
    from agent.prefilter.factory import open_prefilter

    model = open_prefilter(args.model, ModelConfig(path=args.model, intra_op_threads=args.threads))
    cap = cv2.VideoCapture(str(args.video), cv2.CAP_FFMPEG)
    tensors = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        tensors.append(model.preprocess(image)[0].copy())  # decoded and letterboxed beforehand
    cap.release()
    session, feed_name, out = model.session, model.info.input_name, [model.info.output_name]
    stamps: list[float] = []

    def loop(mine: list[np.ndarray]) -> None:
        for tensor in mine:
            session.run(out, {feed_name: tensor})
            stamps.append(time.perf_counter())

    # --runs R: R loops at once on the one session, each over every R-th frame
    loops = [threading.Thread(target=loop, args=(tensors[k::args.runs],)) for k in range(args.runs)]
    for t in loops:
        t.start()
    for t in loops:
        t.join()
    return {"fps": rate(sorted(stamps), args.warmup), "frames": len(stamps)}


def worker_agent(args: argparse.Namespace) -> dict[str, Any]:
    from agent.config.models import AgentConfig, CameraConfig, MetricsConfig, ModelConfig, MqttConfig, OutboxConfig
    from agent.core.inspection import Inspection
    from agent.service import AgentService

    stamps: list[float] = []
    boxes: dict[int, list[list[float]]] = {}
    one_camera = args.cameras == 1
    rss_now: list[float] = []
    cpu_marks: list[dict[str, float]] = []  # thread CPU times at the start and near the end of the timed part
    marks = (args.warmup * args.cameras, (args.frames - 10) * args.cameras)

    def on_inspection(ins: Inspection) -> None:
        stamps.append(time.perf_counter())
        if len(stamps) in marks:
            cpu_marks.append(thread_cpu_seconds())
            rss_now.append(rss_mb("VmRSS"))
        if one_camera:
            boxes[ins.frame.sequence] = [[*d.box, d.class_id, d.confidence] for d in ins.result.detections]

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-agent-") as tmp:
        config = AgentConfig(
            device_id="bench", cameras=[CameraConfig(id=f"cam{i + 1}", source=str(args.video), realtime=False)
                                        for i in range(args.cameras)],
            model=ModelConfig(path=args.model, intra_op_threads=args.threads, concurrent_runs=args.runs),
            mqtt=MqttConfig(url=args.broker, stats_interval_s=0), outbox=OutboxConfig(path=pathlib.Path(tmp) / "o.db"),
            metrics=MetricsConfig(enabled=False))
        service = AgentService(config, on_inspection=on_inspection)
        service.start()
        if not service.publisher.wait_connected(10.0):
            raise SystemExit(f"the agent did not connect to the broker at {args.broker}")
        service.wait(threading.Event())  # until every camera's video ended
        summary = service.shutdown(timeout=30.0)
    inspected = sum(summary.inspected.values())
    acked = int(summary.publisher.acked)
    if acked != inspected:
        raise SystemExit(f"the broker acknowledged {acked} of {inspected} events")
    return {"fps": rate(stamps, args.warmup * args.cameras), "frames": inspected, "acked": acked,
            "rss_peak_mb": rss_mb(), "rss_running_mb": max(rss_now, default=float("nan")),
            "cpu_ms_per_frame": cpu_per_frame(cpu_marks, marks[1] - marks[0]),
            "boxes": {str(k): v for k, v in boxes.items()}}


def worker_ultralytics(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="bench-pipeline-yolo-")
    from ultralytics import YOLO

    from agent.config.models import ModelConfig

    defaults = ModelConfig()
    model = YOLO(str(args.model), task="detect")
    stamps: list[float] = []
    boxes: dict[int, list[list[float]]] = {}
    results = model.predict(source=str(args.video), stream=True, imgsz=args.imgsz, conf=defaults.min_score,
                            iou=defaults.iou_threshold, max_det=defaults.max_detections, device="cpu",
                            verbose=False, project=os.environ["YOLO_CONFIG_DIR"])
    for index, result in enumerate(results, start=1):
        stamps.append(time.perf_counter())
        b = result.boxes
        boxes[index] = [[*map(float, xyxy), int(c), float(s)] for xyxy, c, s in
                        zip(b.xyxy.numpy(), b.cls.numpy(), b.conf.numpy(), strict=True)]
    return {"fps": rate(stamps, args.warmup), "frames": len(stamps), "boxes": {str(k): v for k, v in boxes.items()}}


def worker_breakdown(args: argparse.Namespace) -> dict[str, Any]:
    """One thread, one frame at a time through every stage the agent runs, each timed."""
    import datetime

    import cv2

    from agent.config.models import AgentConfig, CameraConfig, ModelConfig, MqttConfig, OutboxConfig
    from agent.core.detections import PrefilterResult
    from agent.core.frame import Frame
    from agent.pipeline import FrameInspector
    from agent.prefilter.factory import open_prefilter
    from agent.service import build_publisher

    stages = ("decode", "preprocess", "session.run", "postprocess", "triage+event", "outbox+mqtt")
    times: dict[str, list[float]] = {s: [] for s in stages}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-stages-") as tmp:
        config = AgentConfig(device_id="bench", cameras=[CameraConfig(id="cam1", source=str(args.video))],
                             model=ModelConfig(path=args.model, intra_op_threads=args.threads,
                                               concurrent_runs=1),
                             mqtt=MqttConfig(url=args.broker), outbox=OutboxConfig(path=pathlib.Path(tmp) / "o.db"))
        model = open_prefilter(args.model, config.model)
        inspector = FrameInspector(config, model)
        publisher = build_publisher(config)
        publisher.start()
        publisher.wait_connected(10.0)
        cap = cv2.VideoCapture(str(args.video), cv2.CAP_FFMPEG)
        sequence = 0
        while True:
            t0 = time.perf_counter()
            ok, image = cap.read()
            t1 = time.perf_counter()
            if not ok:
                break
            sequence += 1
            tensor, plan = model.preprocess(image)
            t2 = time.perf_counter()
            output = model.forward(tensor)
            t3 = time.perf_counter()
            detections = model.postprocess(output, plan)
            t4 = time.perf_counter()
            frame = Frame("cam1", sequence, datetime.datetime.now(datetime.timezone.utc), time.monotonic(), image)
            inspection = inspector._inspection(frame, PrefilterResult(model.info.model_id, detections, 1.0))
            t5 = time.perf_counter()
            publisher.publish_event(inspection.event)
            t6 = time.perf_counter()
            if sequence > args.warmup:
                for stage, a, b in zip(stages, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6), strict=True):
                    times[stage].append((b - a) * 1000.0)
        cap.release()
        publisher.flush(10.0)
        publisher.stop(5.0)
    return {"ms": {s: float(np.median(v)) for s, v in times.items()},
            "mean_ms": {s: float(np.mean(v)) for s, v in times.items()}, "frames": sequence}


WORKERS = {"bare": worker_bare, "agent": worker_agent, "ultralytics": worker_ultralytics,
           "breakdown": worker_breakdown}


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


def main() -> int:
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
    args = ap.parse_args()
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


def compare(args: argparse.Namespace, common: list[str]) -> int:
    from agent.evaluation.agreement import box_agreement
    from agent.prefilter.gate_record import file_precision

    precision = {m: file_precision(m) for m in args.models}
    # a side: (label, worker, intra-op threads, concurrent runs); ultralytics runs with its own session options
    bare_threads = sorted({1, os.cpu_count() or 1, *(t for t, _r in args.setups)})
    sides = [(f"bare t{t}", "bare", t, 1) for t in bare_threads]
    sides += [(f"bare {setup_name(s)}", "bare", s[0], s[1]) for s in args.setups if s[1] > 1]
    sides += [(f"agent {setup_name(s)}", "agent", s[0], s[1]) for s in args.setups]
    if not args.no_ultralytics:
        sides.append(("ultralytics", "ultralytics", 0, 1))
    first = args.setups[0]
    fps: dict[tuple[str, str], list[float]] = {}
    boxes: dict[tuple[str, str], dict[str, list[list[float]]]] = {}
    cpu: dict[tuple[str, str], dict[str, float]] = {}  # the agent's CPU ms per frame by thread, last round
    rss: dict[int, list[float]] = {1: [], 4: []}  # peak over the process's life (model loading included)
    rss_running: dict[int, list[float]] = {1: [], 4: []}  # while frames flow
    loads: list[str] = []
    for r in range(args.rounds):
        # the sides of one model run back to back (their ratios matter most), the side that goes first
        # rotates every round and the models swap places every other round
        models = args.models if r % 2 == 0 else args.models[::-1]
        turn = sides[r % len(sides):] + sides[:r % len(sides)]
        line = []
        for model in models:
            for label, kind, threads, runs in turn:
                result = run_worker(kind, model, [*common, "--threads", str(threads), "--runs", str(runs)])
                fps.setdefault((model.name, label), []).append(result["fps"])
                line.append(f"{precision[model]} {label} {result['fps']:.1f}")
                if "cpu_ms_per_frame" in result:
                    cpu[(model.name, label)] = result["cpu_ms_per_frame"]
                if "boxes" in result and (kind != "agent" or (threads, runs) == first):
                    boxes[(model.name, kind)] = result["boxes"]
                if kind == "agent" and model == args.models[-1] and (threads, runs) == first:
                    rss[1].append(result["rss_peak_mb"])
                    rss_running[1].append(result["rss_running_mb"])
        if not args.quick and r == 0:
            four = run_worker("agent", args.models[-1], [*common, "--threads", str(first[0]), "--runs",
                                                         str(first[1]), "--cameras", "4"])
            rss[4].append(four["rss_peak_mb"])
            rss_running[4].append(four["rss_running_mb"])
            fps.setdefault(("4 cameras", "agent"), []).append(four["fps"])
        loads.append(load_text())
        print(f"  round {r + 1}/{args.rounds}: {', '.join(line)} frames/s; {loads[-1]}", flush=True)

    names = [m.name for m in args.models]
    print("\nframes per second, per round:")
    for (name, label), values in fps.items():
        print(f"  {name:<28} {label:<12} median {med(values):7.1f}   rounds: {fmt_rounds(values)}")

    print("\nratios (median of the per-round ratios; per round):")
    checks: list[tuple[str, str, float, float]] = []  # (setup, what, value, bar)

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

    if not args.no_ultralytics:
        print(f"\nbox agreement, agent {setup_name(first)} vs ultralytics (same class, IoU >= {MATCH_IOU}, last round, "
              "every frame):")
        for name in names:
            agree = box_agreement(boxes[(name, "agent")], boxes[(name, "ultralytics")], MATCH_IOU)
            print(f"  {name:<28} matched {agree['matched']}, only agent {agree['only_a']}, only ultralytics "
                  f"{agree['only_b']}; IoU mean {agree['mean_iou']:.4f} min {agree['min_iou']:.4f}; "
                  f"|confidence difference| mean {agree['mean_conf_diff']:.4f} max {agree['max_conf_diff']:.4f}")

    print("\nthe agent's CPU time per frame by thread, ms (last round; 'native': threads Python did not start, e.g. "
          "FFmpeg's decoding threads; resolution 10 ms over the run):")
    for (name, label), by_thread in cpu.items():
        cells = ", ".join(f"{t} {v:.2f}" for t, v in by_thread.items())
        print(f"  {name:<28} {label:<12} total {sum(by_thread.values()):5.2f}: {cells}")

    print(f"\nresident memory of the agent process, {names[-1]}, setup {setup_name(first)} (peak RSS over its life, "
          "model loading included; RSS while frames flow):")
    print(f"  one camera:   peak median {med(rss[1]):6.1f} MB (rounds: {fmt_rounds(rss[1])}), running "
          f"{med(rss_running[1]):6.1f} MB; must be <= 300 MB: {'yes' if med(rss[1]) <= 300 else 'NO'}")
    if rss[4]:
        print(f"  four cameras: peak {rss[4][0]:6.1f} MB, running {rss_running[4][0]:6.1f} MB "
              f"({fps[('4 cameras', 'agent')][0]:.1f} frames/s over all four)")
    print(f"\nload per round: {'; '.join(loads)}")
    for setup in args.setups:
        mine = [c for c in checks if c[0] == setup_name(setup)]
        failed = [c for c in mine if c[2] < c[3]]
        print(f"must-shows, agent {setup_name(setup)}: {len(mine) - len(failed)} of {len(mine)} ratios hold"
              + ("" if not failed else "; not: " + ", ".join(c[1] for c in failed)))
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
