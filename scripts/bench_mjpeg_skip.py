#!/usr/bin/env python3
"""What a live MJPEG camera costs when its ``fps`` limit drops frames: every packet decoded (before) against
only the frames inspected decoded (an intra-only codec: agent/capture/pyav_source.py), side by side in one run.

    python scripts/bench_mjpeg_skip.py [--size 1280x960] [--frames 300] [--camera-fps 30] [--fps 10]
                                      [--seconds 10] [--rounds 2] [--video FILE.avi]

The MJPEG bench video (scripts/bench_pipeline_video.py at ``--size``, or ``--video``) is served as a live
camera over HTTP (``multipart/x-mixed-replace``, as IP cameras serve MJPEG: tests/capture/mjpeg_camera.py, in
its own process) at ``--camera-fps``; a grabber with the PyAV decoder (one thread, ``camera.fps: --fps``,
newest frame only, as the agent runs a camera) reads it for ``--seconds`` after a warm-up, each setting in
turn, ``--rounds`` times (the order alternating, so the box's load falls on both alike). Nothing inspects the
frames: what is measured is the camera's own thread (reading the stream, decoding, converting the frames kept
to BGR), in CPU ms per frame the camera sent and per frame kept, and the whole process's CPU beside it.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_pipeline_video import write_video  # noqa: E402

from agent.capture.grabber import Grabber  # noqa: E402
from agent.capture.pyav_source import PyAVSource  # noqa: E402
from agent.config.models import CameraConfig  # noqa: E402

CAMERA = REPO / "tests" / "capture" / "mjpeg_camera.py"
SETTINGS = {"every packet decoded": True, "only kept frames decoded": False}  # name: decode_every_packet
WARMUP_S = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1280x960", help="WxH of the video written (default 1280x960)")
    ap.add_argument("--frames", type=int, default=300, help="frames in the video written (it loops)")
    ap.add_argument("--video", type=pathlib.Path, help="an MJPEG video to serve instead of writing one")
    ap.add_argument("--camera-fps", type=float, default=30.0, help="the rate the camera sends (default 30)")
    ap.add_argument("--fps", type=float, default=10.0, help="camera.fps: the rate kept (default 10)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per setting and round")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size {args.size!r}: expected WxH, e.g. 1280x960")
    if w < 16 or h < 16:
        ap.error(f"--size {args.size!r}: expected at least 16x16")
    args.wh = (w, h)
    if args.video is not None and not args.video.is_file():
        ap.error(f"--video {args.video}: no such file")
    for name in ("frames", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}: expected at least 1")
    for name in ("camera_fps", "fps", "seconds"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')}: expected a positive number")
    if args.fps >= args.camera_fps:
        ap.error(f"--fps {args.fps:g}: expected less than --camera-fps {args.camera_fps:g} (else nothing is dropped)")
    return args


def start_camera(video: pathlib.Path, fps: float) -> tuple[subprocess.Popen[str], str]:
    """The MJPEG camera in its own process, and its URL."""
    proc = subprocess.Popen([sys.executable, str(CAMERA), str(video), "--fps", f"{fps:g}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        _out, err = proc.communicate(timeout=10)
        raise SystemExit(f"the MJPEG camera did not start: {line} {err.strip()[-500:]}")
    return proc, line.split(" ", 1)[1]


def _thread_cpu_s(name: str) -> float:
    thread = next((t for t in threading.enumerate() if t.name == name), None)
    if thread is None or thread.ident is None:
        raise SystemExit(f"the camera's thread {name!r} is gone (the camera failed?)")
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def measure(url: str, every_packet: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One run of one setting: CPU ms per frame sent and per frame kept, of the camera's thread and process."""
    camera = CameraConfig(id="mj", source=url, fps=args.fps, realtime=True, decoder="pyav")
    made: list[PyAVSource] = []

    def source(spec: str) -> PyAVSource:
        made.append(PyAVSource(spec, decode_every_packet=every_packet))
        return made[-1]

    grabber = Grabber(camera, source_factory=source)
    grabber.start()
    try:
        deadline = time.monotonic() + WARMUP_S
        while time.monotonic() < deadline:
            grabber.take(timeout=0.2)
        if grabber.state != "online":
            raise SystemExit(f"the camera is {grabber.state}: {grabber.stats().last_error}")
        thread0, proc0, stats0 = _thread_cpu_s("grab-mj"), time.process_time(), grabber.stats()
        undecoded0 = made[-1].undecoded
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            grabber.take(timeout=0.2)
        thread1, proc1, stats1 = _thread_cpu_s("grab-mj"), time.process_time(), grabber.stats()
        undecoded1 = made[-1].undecoded
    finally:
        grabber.stop(timeout=5.0)
    sent = stats1.frames_read - stats0.frames_read
    kept = sent - (stats1.dropped - stats0.dropped) - (stats1.corrupt - stats0.corrupt)
    if sent <= 0 or kept <= 0:
        raise SystemExit(f"no frames in {args.seconds:g} s (sent {sent}, kept {kept})")
    return {"sent": sent, "kept": kept, "undecoded": undecoded1 - undecoded0, "seconds": args.seconds,
            "thread_ms": (thread1 - thread0) * 1000.0, "process_ms": (proc1 - proc0) * 1000.0}


def _row(name: str, runs: list[dict[str, Any]]) -> dict[str, float]:
    sent, kept = sum(r["sent"] for r in runs), sum(r["kept"] for r in runs)
    thread, process = sum(r["thread_ms"] for r in runs), sum(r["process_ms"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    row = {"per_sent": thread / sent, "per_kept": thread / kept, "process_per_kept": process / kept,
           "core": thread / seconds / 10.0}
    print(f"  {name:26s} {sent / seconds:6.1f} {kept / seconds:6.1f} {sum(r['undecoded'] for r in runs) / sent:6.1%}"
          f" {row['per_sent']:8.2f} {row['per_kept']:8.2f} {row['process_per_kept']:8.2f} {row['core']:6.1f} %")
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or write_video(pathlib.Path(tmp) / "cam", args.frames, args.wh, "mjpg")
        proc, url = start_camera(video, args.camera_fps)
        try:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETTINGS}
            for round_ in range(args.rounds):
                order = list(SETTINGS) if round_ % 2 == 0 else list(SETTINGS)[::-1]
                for name in order:
                    runs[name].append(measure(url, SETTINGS[name], args))
        finally:
            proc.kill()
            proc.communicate(timeout=10)
    one, five, _ = os.getloadavg()
    print(f"live MJPEG camera {video.name if args.video else args.size} at {args.camera_fps:g} fps, camera.fps "
          f"{args.fps:g}, PyAV one thread; {args.rounds} x {args.seconds:g} s each; load {one:.1f} (5 min {five:.1f})")
    print(f"  {'':26s} {'sent/s':>6s} {'kept/s':>6s} {'undec':>6s} {'ms/sent':>8s} {'ms/kept':>8s} {'proc/kept':>8s}"
          f" {'core':>6s}   (camera thread's CPU; proc: the whole process's)")
    rows = {name: _row(name, runs[name]) for name in SETTINGS}
    before, after = rows["every packet decoded"], rows["only kept frames decoded"]
    print(f"only kept / every packet: {after['per_kept'] / before['per_kept']:.2f}x CPU per kept frame "
          f"({before['per_kept']:.2f} -> {after['per_kept']:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
