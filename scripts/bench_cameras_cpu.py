"""``scripts/bench_cameras.py --cpu N``: the CPU each inspected frame costs, by thread group, for each camera
decoder setting, N cameras of a recorded video played in real time, settings alternating in rounds in one run.

CPU ms per frame (the process's CPU time over a window, from /proc/self/task, divided by the frames in it) is
far less sensitive to other load on the box than frames per second. ``capture`` is divided by the frames the
grabbers read (a frame dropped because the model was busy was decoded all the same), the other groups by the
frames inspected, so the total is what one frame costs when the box keeps up. Groups: ``capture`` (the
grabber threads ``grab-*`` and FFmpeg's decoder threads, e.g. OpenCV's ``av:h264:df``), ``model``
(``inference*`` but the prepare/publish threads), ``prepare``, ``publish``, ``other``. Printed per setting
(median over rounds), then each setting's total against the first's.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench_cameras_ladder import load_text  # noqa: E402
from bench_pipeline_video import write_video  # noqa: E402

from agent.config.camera import DecoderScaling  # noqa: E402
from agent.config.models import CameraConfig  # noqa: E402
from agent.publish.local_broker import LocalMosquitto  # noqa: E402

SETTINGS: dict[str, dict[str, Any]] = {
    "opencv": {"decoder": "opencv"},
    "pyav": {"decoder": "pyav"},
    "pyav-skip-deblocking": {"decoder": "pyav", "skip_deblocking": True},
    "pyav-frame-threads": {"decoder": "pyav", "decode_threads": 0},
}
GROUPS = ("capture", "model", "prepare", "publish", "other")
WARMUP_S = 2.5  # run_once waits 1 s itself; the sampled window starts after the cameras and model settled


def add_decoder_args(ap: argparse.ArgumentParser) -> None:
    """bench_cameras.py's options for the cameras' decoding (``--ladder``) and for ``--cpu``."""
    ap.add_argument("--decoder", default="auto", choices=("auto", "pyav", "opencv"),
                    help="--ladder: camera.decoder (auto: pyav where installed)")
    ap.add_argument("--skip-deblocking", "--decode-fast", action="store_true",
                    help="--ladder: camera.skip_deblocking (pyav: H.264/HEVC without the deblocking filter)")
    ap.add_argument("--decode-threads", type=int, default=1, help="--ladder: camera.decode_threads (pyav; 0: auto)")
    ap.add_argument("--decoder-scaling", default="none", choices=typing.get_args(DecoderScaling),
                    help="--ladder: camera.decoder_scaling (pyav: the model's input scaled as the frame is decoded)")
    ap.add_argument("--cpu", type=int, default=None, metavar="N",
                    help="CPU ms per frame by thread group, N cameras, for each of --settings (decoders) side by side")
    ap.add_argument("--settings", nargs="+", default=None,
                    help=f"--cpu: some of {' '.join(SETTINGS)} (default: all)")


def _group(name: str) -> str:
    if name.startswith(("grab-", "av:")):
        return "capture"
    if name.startswith("inference-prepare"):
        return "prepare"
    if name.startswith("inference-publish"):
        return "publish"
    if name.startswith("inference"):
        return "model"
    return "other"


def _cpu_by_group() -> collections.Counter[str]:
    """CPU seconds so far of each thread group of this process (read by scripts/bench_threads.py's counter)."""
    from bench_threads import thread_counters

    tick = os.sysconf("SC_CLK_TCK")
    out: collections.Counter[str] = collections.Counter()
    for name, (ticks, _faults) in thread_counters().items():
        out[_group(name)] += ticks / tick
    return out


def _measure(run: Callable[[], dict[str, Any]], seconds: float) -> dict[str, Any]:
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(run()), name="bench-run")
    worker.start()
    time.sleep(WARMUP_S)
    before, t0 = _cpu_by_group(), time.monotonic()
    time.sleep(max(1.0, seconds - (WARMUP_S - 1.0) - 0.5))
    after, window = _cpu_by_group(), time.monotonic() - t0
    worker.join()
    inspected = float(result["total_fps"]) * window
    # every frame read is decoded, the dropped ones too: capture per frame read, the rest per frame inspected
    read = (float(result["total_fps"]) + sum(result["dropped"].values()) / float(result["elapsed"])) * window
    result["cpu_ms"] = {g: (after[g] - before[g]) * 1000.0 / (read if g == "capture" else inspected)
                        if inspected else float("nan") for g in GROUPS}
    return result


def run_cpu(args: argparse.Namespace, run_once: Callable[..., dict[str, Any]]) -> int:
    w, h = (int(v) for v in args.size.lower().split("x"))
    names = args.settings or list(SETTINGS)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        print(f"--settings: unknown {', '.join(unknown)}; expected some of {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    runtime = (args.runtimes or ["onnxruntime"])[0]
    print(f"{os.cpu_count()} cores; {args.cpu} cameras of {w}x{h} {args.codec} at {args.fps:g} fps, newest frame "
          f"only; {runtime}, max_batch {args.batch}; {args.seconds:g} s x {args.rounds} rounds per setting; "
          f"{load_text()}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with LocalMosquitto() as mosquitto, tempfile.TemporaryDirectory(prefix="edge-agent-bench-cpu-") as tmp:
        workdir = pathlib.Path(tmp)
        video = write_video(workdir / "camera", int((args.seconds + 6) * args.fps), (w, h), args.codec,
                            fps=int(args.fps))
        runs = {k: v for k, v in (("intra_op_threads", args.threads), ("concurrent_runs", args.runs)) if v is not None}
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                cameras = [CameraConfig(id=f"cam{i + 1}", source=str(video), realtime=True, fps=args.fps,
                                        **SETTINGS[name]) for i in range(args.cpu)]
                res = _measure(lambda cams=cameras: run_once(mosquitto.url, cams, args.model, args.batch, runs,
                                                              args.seconds, workdir, runtime), args.seconds)
                results[name].append(res)
                _print_row(f"{name} (round {r + 1})", res)
    print(f"\nmedian over {args.rounds} rounds, CPU ms per frame (capture: per frame read; the rest: per frame "
          f"inspected); {load_text()} at the end")
    totals = {}
    for name in names:
        med = {g: float(np.median([x["cpu_ms"][g] for x in results[name]])) for g in GROUPS}
        fps = float(np.median([x["total_fps"] for x in results[name]]))
        dropped = sum(int(v) for x in results[name] for v in x["dropped"].values())
        totals[name] = sum(med.values())
        print(f"  {name:<22} " + "  ".join(f"{g} {med[g]:5.2f}" for g in GROUPS)
              + f"  | total {totals[name]:5.2f}  ({fps:.1f} frames/s, {dropped} dropped)")
    first = names[0]
    print("  total / " + first + ": " + ", ".join(f"{n} {totals[n] / totals[first]:.2f}x" for n in names[1:]))
    return 0


def _print_row(title: str, res: dict[str, Any]) -> None:
    ages = [a for cam in res["age"].values() for a in cam]
    p99 = float(np.percentile(ages, 99)) if ages else float("nan")
    total = sum(res["cpu_ms"].values())
    print(f"  {title:<34} {res['total_fps']:6.1f} frames/s, dropped {sum(res['dropped'].values())}, p99 "
          f"{p99:6.1f} ms, CPU {total:5.2f} ms/frame (capture {res['cpu_ms']['capture']:.2f}); {load_text()}",
          flush=True)
