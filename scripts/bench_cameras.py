#!/usr/bin/env python3
"""Four cameras on one box: per-camera rate, drops and latency, and what batching buys.

    python scripts/bench_cameras.py [--cameras 4] [--seconds 10] [--rounds 2] [--model M]
    python scripts/bench_cameras.py --ladder 4 8 12 16 [--size 1280x960] [--codec h264] [--runtimes ...]
                                    [--decoder pyav] [--skip-deblocking] [--decode-threads 1]
    python scripts/bench_cameras.py --cpu 8 [--settings opencv pyav pyav-skip-deblocking] [--seconds 10]

The whole agent runs (grabber threads, the inference thread, triage, the SQLite outbox, a
real Mosquitto started for the run), in two settings, each with ``model.max_batch`` 1 (the
default: one prefilter call per frame) and ``--batch`` (4: the frames that are ready from several
cameras in one call), alternating in rounds so that load from other processes hits both alike:

1. **live**: ``--cameras`` synthetic conveyor cameras at ``--fps`` each, newest frame only.
   Printed per camera: frames inspected per second, frames dropped (a newer one arrived
   before the old one was taken), and latency p50/p99 from capture to the frame's event
   (waiting for the inference thread included) and of the prefilter call alone.
2. **saturated**: the same number of cameras reading a recorded video as fast as the
   agent takes frames (``realtime: false``: every frame, none dropped), so the inference
   thread never waits: frames inspected per second over all cameras, and the ratio of
   batched to one call per frame.

``--cpu N [--settings opencv pyav ...]``: the CPU ms each inspected frame costs, by thread group (capture,
model, prepare, publish, other), N cameras of the ``--ladder`` video, for each camera decoder setting side by
side in one run (scripts/bench_cameras_cpu.py). ``--decoder``, ``--skip-deblocking`` (``--decode-fast``) and
``--decode-threads`` set the cameras' decoding for ``--ladder``.

``--ladder N1 N2 ...``: how many cameras one box inspects. Each camera plays a recorded video of the
conveyor at ``--size`` in ``--codec`` (default 1280x960 H.264, as an IP camera's main stream; see
scripts/bench_pipeline_video.py) in real time at ``--fps``, newest frame only, as a live camera does; for
each count and each of ``--runtimes`` (alternating which goes first) the whole agent runs ``--seconds``:
a count passes when no camera dropped a frame and the p99 from capture to the frame's event is under
``--p99-ms`` (150). Printed: every step, then the most cameras that passed per runtime, with the load
average beside each step (the box is shared: a step that fails under load may pass on an idle box).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from agent.capture.synthetic import render_still  # noqa: E402
from agent.config.models import (  # noqa: E402
    AgentConfig,
    CameraConfig,
    MetricsConfig,
    ModelConfig,
    MqttConfig,
    OutboxConfig,
)
from agent.core.inspection import Inspection  # noqa: E402
from agent.publish.local_broker import LocalMosquitto  # noqa: E402
from agent.runtime.service import AgentService  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def write_video(path: pathlib.Path, frames: int) -> pathlib.Path:
    rng = np.random.default_rng(5)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 15.0, (640, 480))
    for _ in range(frames):
        writer.write(render_still(rng)[0])
    writer.release()
    return path


def run_once(url: str, cameras: list[CameraConfig], model: pathlib.Path | None, max_batch: int,
             runs: dict[str, int], seconds: float, workdir: pathlib.Path, runtime: str = "onnxruntime",
             ) -> dict[str, object]:
    age_ms: dict[str, list[float]] = collections.defaultdict(list)
    call_ms: dict[str, list[float]] = collections.defaultdict(list)

    def on_inspection(ins: Inspection) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        age_ms[ins.frame.camera_id].append((now - ins.frame.captured_at).total_seconds() * 1000.0)
        call_ms[ins.frame.camera_id].append(ins.result.latency_ms)

    outbox = workdir / f"outbox-{time.monotonic_ns()}.sqlite"
    model_config = ModelConfig(max_batch=max_batch, runtime=runtime, **runs)  # runs: threads, concurrent runs
    if model is not None:
        model_config = ModelConfig(path=model, max_batch=max_batch, runtime=runtime, **runs)
    config = AgentConfig(device_id="bench", cameras=cameras, model=model_config,
                         mqtt=MqttConfig(url=url, stats_interval_s=60), outbox=OutboxConfig(path=outbox),
                         metrics=MetricsConfig(enabled=False))
    service = AgentService(config, on_inspection=on_inspection)
    service.start()
    time.sleep(1.0)  # cameras open, the model warms up: not measured
    for counts in (age_ms, call_ms):
        counts.clear()
    start = service.summary().cameras
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    end = service.summary().cameras
    inspected = {cam: len(age_ms[cam]) for cam in (c.id for c in cameras)}
    ended = [cam for cam, stats in end.items() if stats.state == "ended"]
    if ended:
        print(f"  warning: {', '.join(ended)} reached the end of the video inside the run; the rate is too low",
              file=sys.stderr)
    service.shutdown(timeout=10.0)
    outbox.unlink(missing_ok=True)
    return {
        "elapsed": elapsed,
        "fps": {cam: n / elapsed for cam, n in inspected.items()},
        "dropped": {cam: end[cam].dropped - start[cam].dropped for cam in inspected},
        "age": {cam: age_ms[cam] for cam in inspected},
        "call": {cam: call_ms[cam] for cam in inspected},
        "total_fps": sum(inspected.values()) / elapsed,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=15.0, help="frame rate of each live camera")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of one measured run")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each setting")
    ap.add_argument("--batch", type=int, default=4, help="model.max_batch of the batched setting")
    ap.add_argument("--threads", type=int, default=None, help="model.intra_op_threads (default: the agent's)")
    ap.add_argument("--runs", type=int, default=None, help="model.concurrent_runs (default: the agent's)")
    ap.add_argument("--model", type=pathlib.Path, default=None, help="default: the agent's default model")
    ap.add_argument("--ladder", type=int, nargs="+", default=None,
                    help="camera counts to try, each camera a recorded --size --codec video played at --fps")
    ap.add_argument("--size", default="1280x960", help="--ladder: the cameras' frame size WxH")
    ap.add_argument("--codec", default="h264", choices=("h264", "mjpg", "mp4v"), help="--ladder: the video codec")
    ap.add_argument("--runtimes", nargs="+", default=None, choices=("onnxruntime", "openvino"),
                    help="--ladder: model.runtime to try (default: both where openvino is installed)")
    ap.add_argument("--p99-ms", type=float, default=150.0, help="--ladder: capture-to-event p99 limit")
    from bench_cameras_cpu import add_decoder_args

    add_decoder_args(ap)
    args = ap.parse_args()
    if args.ladder:
        from bench_cameras_ladder import run_ladder

        return run_ladder(args, run_once)
    if args.cpu:
        from bench_cameras_cpu import run_cpu

        return run_cpu(args, run_once)

    modes = {"one call per frame": 1, f"batched (max_batch {args.batch})": args.batch}
    model_runs = {name: value for name, value in (("intra_op_threads", args.threads), ("concurrent_runs", args.runs))
                  if value is not None}
    resolved = ModelConfig(**model_runs)
    threads, runs = resolved.intra_op_threads, resolved.concurrent_runs
    print(f"{args.cameras} cameras, {os.cpu_count()} cores, model {args.model or ModelConfig().path.name}, "
          f"{threads} intra-op threads x {runs} concurrent runs, {args.seconds:g} s x {args.rounds} rounds per "
          "setting", flush=True)
    with LocalMosquitto() as mosquitto, tempfile.TemporaryDirectory(prefix="edge-agent-bench-cameras-") as tmp:
        workdir = pathlib.Path(tmp)
        # long enough that no camera reaches its end inside a run (checked below)
        video = write_video(workdir / "conveyor.mp4", int((args.seconds + 3) * 60))
        live = [CameraConfig(id=f"cam{i + 1}", source=f"synthetic://conveyor?seed={i + 1}&fps={args.fps:g}",
                             realtime=True) for i in range(args.cameras)]
        saturated = [CameraConfig(id=f"cam{i + 1}", source=str(video), realtime=False)
                     for i in range(args.cameras)]
        for title, cameras in (("live", live), ("saturated", saturated)):
            results: dict[str, list[dict[str, object]]] = {name: [] for name in modes}
            for _ in range(args.rounds):
                for name, batch in modes.items():
                    results[name].append(run_once(mosquitto.url, cameras, args.model, batch, model_runs, args.seconds,
                                                  workdir))
            what = (f"cameras at {args.fps:g} fps, newest frame only" if title == "live"
                    else "every frame of a recorded video, as fast as the agent takes them")
            print(f"\n{title}: {what}")
            report(title, results, [c.id for c in cameras])
    return 0


def report(title: str, results: dict[str, list[dict[str, object]]], cams: list[str]) -> None:
    totals = {}
    for name, runs in results.items():
        total = float(np.median([float(r["total_fps"]) for r in runs]))  # type: ignore[arg-type]
        totals[name] = total
        print(f"  {name}: {total:.1f} frames/s over all cameras")
        if title != "live":
            continue
        print(f"    {'camera':<8} {'fps':>6} {'dropped':>8} {'age p50':>8} {'p99':>7} {'call p50':>9} {'p99':>7}")
        for cam in cams:
            fps = float(np.mean([r["fps"][cam] for r in runs]))  # type: ignore[index]
            dropped = sum(int(r["dropped"][cam]) for r in runs)  # type: ignore[index]
            ages = [a for r in runs for a in r["age"][cam]]  # type: ignore[index]
            calls = [c for r in runs for c in r["call"][cam]]  # type: ignore[index]
            print(f"    {cam:<8} {fps:>6.1f} {dropped:>8} {percentile(ages, 50):>7.1f}  {percentile(ages, 99):>6.1f} "
                  f"{percentile(calls, 50):>8.1f}  {percentile(calls, 99):>6.1f}")
    names = list(totals)
    print(f"  batched / one call per frame: {totals[names[1]] / totals[names[0]]:.2f}x frames/s"
          + ("" if title != "live" else " (both should equal the cameras' rate when the box keeps up)"))


if __name__ == "__main__":
    raise SystemExit(main())
