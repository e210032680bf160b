"""``scripts/bench_cameras.py --ladder``: the most cameras of a given size, codec and rate one box inspects with
no drops and the capture-to-event p99 under a limit, per runtime (see bench_cameras.py's docstring)."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench_pipeline_video import write_video  # noqa: E402

from agent.config.models import CameraConfig, ModelConfig  # noqa: E402
from agent.publish.local_broker import LocalMosquitto  # noqa: E402

WARMUP_S = 3.0  # the cameras open and the model warms up before run_once starts counting (it waits 1 s itself)


def load_text() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (5 min {five:.1f})"


def run_ladder(args: argparse.Namespace, run_once: Callable[..., dict[str, Any]]) -> int:
    from agent.prefilter.openvino_session import openvino_version

    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"--size must be WIDTHxHEIGHT, e.g. 1280x960, got {args.size!r}", file=sys.stderr)
        return 2
    runtimes = args.runtimes or (["onnxruntime", "openvino"] if openvino_version() else ["onnxruntime"])
    model = ModelConfig(**{k: v for k, v in (("intra_op_threads", args.threads), ("concurrent_runs", args.runs))
                           if v is not None})
    print(f"{os.cpu_count()} cores; cameras of {w}x{h} {args.codec} at {args.fps:g} fps (a recorded video played "
          f"in real time, newest frame only); model {args.model or model.path.name}, {model.intra_op_threads} "
          f"intra-op threads x {model.concurrent_runs} runs, max_batch {args.batch}; decoder {args.decoder}"
          f"{', deblocking skipped' if args.skip_deblocking else ''}, {args.decode_threads} decode thread(s), "
          f"decoder_scaling {args.decoder_scaling}; "
          f"{args.seconds:g} s a step; pass: "
          f"no drops and capture-to-event p99 < {args.p99_ms:g} ms; {load_text()}", flush=True)
    best: dict[str, int] = {rt: 0 for rt in runtimes}
    with LocalMosquitto() as mosquitto, tempfile.TemporaryDirectory(prefix="edge-agent-bench-ladder-") as tmp:
        workdir = pathlib.Path(tmp)
        frames = int((args.seconds + WARMUP_S + 3) * args.fps)
        video = write_video(workdir / "camera", frames, (w, h), args.codec, fps=int(args.fps))
        for step, count in enumerate(sorted(set(args.ladder))):
            cameras = [CameraConfig(id=f"cam{i + 1}", source=str(video), realtime=True, fps=args.fps,
                                    decoder=args.decoder, skip_deblocking=args.skip_deblocking,
                                    decoder_scaling=args.decoder_scaling,
                                    decode_threads=args.decode_threads) for i in range(count)]
            order = runtimes if step % 2 == 0 else runtimes[::-1]
            passed_any = False
            for runtime in order:
                result = run_once(mosquitto.url, cameras, args.model, args.batch,
                                  {k: v for k, v in (("intra_op_threads", args.threads),
                                                     ("concurrent_runs", args.runs)) if v is not None},
                                  args.seconds, workdir, runtime)
                ok = _report_step(count, runtime, result, args)
                if ok:
                    best[runtime] = max(best[runtime], count)
                    passed_any = True
            if not passed_any:
                break  # more cameras will not pass either
    print("\nthe most cameras that passed: " + ", ".join(f"{rt} {n}" for rt, n in best.items())
          + f"; {load_text()} at the end")
    return 0


def _report_step(count: int, runtime: str, result: dict[str, Any], args: argparse.Namespace) -> bool:
    ages = [a for cam in result["age"].values() for a in cam]
    p50 = float(np.percentile(ages, 50)) if ages else float("nan")
    p99 = float(np.percentile(ages, 99)) if ages else float("nan")
    dropped = sum(int(v) for v in result["dropped"].values())
    expected = count * args.fps
    ok = dropped == 0 and bool(ages) and p99 < args.p99_ms
    print(f"  {count:>3} cameras, {runtime:<11}: {result['total_fps']:6.1f} frames/s of {expected:g}, dropped "
          f"{dropped}, capture-to-event p50 {p50:6.1f} ms p99 {p99:6.1f} ms: {'pass' if ok else 'FAIL'}; "
          f"{load_text()}", flush=True)
    return ok
