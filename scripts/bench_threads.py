#!/usr/bin/env python3
"""Where the agent's CPU goes, by thread: CPU milliseconds and minor page faults per inspected frame.

    python scripts/bench_threads.py [--cameras 8] [--runtime onnxruntime] [--batch 4] [--seconds 10]
                                    [--rounds 2] [--size 1280x960] [--codec h264] [--baseline DIR]
                                    [--decoder-scaling planes] [--skip-deblocking]

The whole agent runs as in ``scripts/bench_cameras.py --ladder`` (each camera a recorded ``--size``
``--codec`` video played in real time at ``--fps``, newest frame only, a real Mosquitto); after a warm-up,
the CPU time (user + system) and the minor page faults of every thread of this process are read from
``/proc/self/task/<tid>/stat`` at the start and the end of a window, and divided by the frames inspected:
by thread name with the trailing number dropped (``grab-cam`` is all grabbers, ``inference`` every model
thread, ``av:h264:df`` FFmpeg's decoding threads; ``native`` the threads Python did not start, e.g.
FFmpeg's colour-conversion workers). CPU per inspected frame is far less sensitive to other processes'
load than frames per second, though a busy box still inflates it (cache misses): compare runs made
side by side.

``--baseline DIR``: the same measurement of another checkout of edge-agent (``DIR`` is its root: e.g. a
``git worktree`` of an older commit), in its own process, alternating with this checkout round by round;
printed side by side with the ratio (this / baseline). Linux only.
"""

from __future__ import annotations

import argparse
import collections
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
AGENT_DIR_ENV = "BENCH_THREADS_AGENT_DIR"  # where `agent` is imported from (the --baseline side sets it)
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, os.environ.get(AGENT_DIR_ENV) or str(REPO))

import agent  # noqa: E402
from agent.config.models import CameraConfig  # noqa: E402
from agent.publish.local_broker import LocalMosquitto  # noqa: E402

# agent first: bench_cameras puts this checkout on sys.path, and the side's agent is already imported by then
AGENT_USED = pathlib.Path(agent.__file__).parent

from bench_cameras import run_once  # noqa: E402
from bench_pipeline_video import CODECS, write_video  # noqa: E402

WARM_UP_S = 2.5  # after run_once's own second: cameras open, the model warm, the outbox busy


def thread_counters() -> dict[str, tuple[int, int]]:
    """(CPU clock ticks, minor faults) of this process's threads so far, summed by thread group."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = pathlib.Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        name = names.get(int(tid)) or ("native" if comm.startswith("python") else comm)
        group = out[name.rstrip("0123456789-") or name]
        group[0] += int(fields[11]) + int(fields[12])  # utime + stime
        group[1] += int(fields[7])  # minflt
    return {name: (cpu, faults) for name, (cpu, faults) in out.items()}


def profile_once(url: str, cameras: list[CameraConfig], batch: int, runtime: str, seconds: float,
                 workdir: pathlib.Path) -> dict[str, Any]:
    """One run: {"fps", "dropped", "threads": {group: [ms per frame, faults per frame]}}."""
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(
        run_once(url, cameras, None, batch, {}, WARM_UP_S + seconds, workdir, runtime)), name="bench-run")
    runner.start()
    time.sleep(1.0 + WARM_UP_S)
    before, t0 = thread_counters(), time.monotonic()
    time.sleep(seconds)
    after, window = thread_counters(), time.monotonic() - t0
    runner.join()
    frames = float(result["total_fps"]) * window
    hz = os.sysconf("SC_CLK_TCK")
    threads = {}
    for name, (cpu, faults) in after.items():
        cpu0, faults0 = before.get(name, (0, 0))
        threads[name] = [(cpu - cpu0) / hz * 1000.0 / max(frames, 1.0), (faults - faults0) / max(frames, 1.0)]
    return {"fps": float(result["total_fps"]), "dropped": sum(result["dropped"].values()), "threads": threads}


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``--rounds`` runs of this checkout (one side of the comparison)."""
    w, h = (int(v) for v in args.size.lower().split("x"))
    with LocalMosquitto() as mosquitto, tempfile.TemporaryDirectory(prefix="edge-agent-bench-threads-") as tmp:
        workdir = pathlib.Path(tmp)
        frames = int((1.0 + WARM_UP_S + args.seconds + 3.0) * args.fps)
        video = write_video(workdir / "camera", frames, (w, h), args.codec, fps=int(args.fps))
        scaling: dict[str, Any] = {"decoder_scaling": args.decoder_scaling} if args.decoder_scaling else {}
        if args.skip_deblocking:
            scaling["skip_deblocking"] = True
        cameras = [CameraConfig(id=f"cam{i + 1}", source=str(video), realtime=True, fps=args.fps, **scaling)
                   for i in range(args.cameras)]
        return [profile_once(mosquitto.url, cameras, args.batch, args.runtime, args.seconds, workdir)
                for _ in range(args.rounds)]


def side(args: argparse.Namespace, agent_dir: pathlib.Path | None) -> list[dict[str, Any]]:
    """One round of one side, in a process of its own (``agent`` imported from ``agent_dir``, else this one)."""
    argv = [sys.executable, str(pathlib.Path(__file__).resolve()), "--json", "--rounds", "1",
            *[f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
              if k in ("cameras", "runtime", "batch", "seconds", "size", "codec", "fps")],
            *([f"--decoder-scaling={args.decoder_scaling}"] if args.decoder_scaling and agent_dir is None else []),
            *(["--skip-deblocking"] if args.skip_deblocking and agent_dir is None else [])]
    env = dict(os.environ, **({AGENT_DIR_ENV: str(agent_dir)} if agent_dir is not None else {}))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"the {'baseline' if agent_dir else 'current'} side failed:\n{proc.stderr[-3000:]}")
    runs: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return runs


def medians(runs: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    names = {name for run in runs for name in run["threads"]}
    return {name: (statistics.median(r["threads"].get(name, [0.0, 0.0])[0] for r in runs),
                   statistics.median(r["threads"].get(name, [0.0, 0.0])[1] for r in runs)) for name in names}


def rates(runs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['fps']:.1f} fps / {r['dropped']} dropped" for r in runs)


def report(title: str, runs: list[dict[str, Any]], baseline: list[dict[str, Any]] | None) -> None:
    mine = medians(runs)
    base = medians(baseline) if baseline else {}
    print(f"{title}: {rates(runs)}" + (f"; baseline: {rates(baseline)}" if baseline else ""))
    head = f"  {'thread':<34} {'ms/frame':>9} {'faults':>8}"
    print(head + (f" {'baseline':>9} {'faults':>8} {'ratio':>6}" if baseline else ""))
    order = sorted(set(mine) | set(base), key=lambda n: -max(mine.get(n, (0, 0))[0], base.get(n, (0, 0))[0]))
    for name in order:
        ms, faults = mine.get(name, (0.0, 0.0))
        if max(ms, base.get(name, (0.0, 0.0))[0]) < 0.005:
            continue
        line = f"  {name[:34]:<34} {ms:>9.2f} {faults:>8.1f}"
        if baseline:
            b_ms, b_faults = base.get(name, (0.0, 0.0))
            line += f" {b_ms:>9.2f} {b_faults:>8.1f} {ms / b_ms if b_ms else float('nan'):>6.2f}"
        print(line)
    total = sum(ms for ms, _ in mine.values())
    b_total = sum(ms for ms, _ in base.values())
    print(f"  {'total':<34} {total:>9.2f}" + (f" {'':>8} {b_total:>9.2f} {'':>8} {total / b_total:>6.2f}"
                                               if baseline and b_total else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "openvino"))
    ap.add_argument("--batch", type=int, default=4, help="model.max_batch")
    ap.add_argument("--seconds", type=float, default=10.0, help="the measured window of one run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fps", type=float, default=15.0, help="frame rate of each camera")
    ap.add_argument("--size", default="1280x960", help="the cameras' frame size WxH")
    ap.add_argument("--codec", default="h264", choices=CODECS)
    ap.add_argument("--baseline", type=pathlib.Path, default=None, help="another checkout's root, to compare")
    ap.add_argument("--decoder-scaling", default=None, help="camera.decoder_scaling of this checkout's side only "
                    "(the baseline keeps its default: it may not know the setting)")
    ap.add_argument("--skip-deblocking", action="store_true", help="camera.skip_deblocking of this checkout's side "
                    "only (the baseline decodes as its defaults say)")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one side's runs, for --baseline
    args = ap.parse_args()
    if not sys.platform.startswith("linux"):
        ap.error("per-thread counters come from /proc: Linux only")
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size {args.size!r}: expected WxH, e.g. 1280x960")
    if min(w, h, args.cameras, args.batch, args.rounds) <= 0 or args.seconds <= 0 or args.fps <= 0:
        ap.error("--size, --cameras, --batch, --rounds, --seconds and --fps must be positive")
    if args.baseline is not None and not (args.baseline / "agent" / "__init__.py").is_file():
        ap.error(f"--baseline {args.baseline}: not an edge-agent checkout (no agent/__init__.py there)")
    if args.json:
        print(f"agent from {AGENT_USED}", file=sys.stderr)
        print(json.dumps(measure(args)))
        return 0
    print(f"{args.cameras} cameras of {args.size} {args.codec} at {args.fps:g} fps, {args.runtime}, max_batch "
          f"{args.batch}, {args.seconds:g} s x {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.baseline is None:
        report("this checkout", measure(args), None)
        return 0
    runs: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    for i in range(args.rounds):  # alternating which side goes first, so load from elsewhere hits both alike
        for which in ((None, args.baseline) if i % 2 == 0 else (args.baseline, None)):
            (baseline if which is not None else runs).extend(side(args, which))
    report(f"this checkout vs {args.baseline}", runs, baseline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
