#!/usr/bin/env python3
"""What the letterbox into the model's input costs per frame, the agent's way against the one it replaced,
measured side by side in one run.

    python scripts/bench_letterbox.py [--size 1280x960] [--input 640] [--rounds 5] [--frames 200]

a. ``divide``: the resize, then one ``np.divide`` by 255 over the transposed BGR view into the tensor
   (what ``letterbox_to_tensor`` did before);
b. ``lut``: ``letterbox_to_tensor`` as it is (the resize, ``cv2.split``, one ``cv2.LUT`` per plane).

Both fill the same tensor; they are checked to give the same numbers, bit for bit, before timing. Each
round times ``--frames`` frames of each, alternating, as CPU time of this thread (``time.thread_time``,
so other processes on the box change it little); the medians and their ratio are printed. OpenCV runs
with one thread, as a busy agent's threads effectively do.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from agent.prefilter.letterbox import Letterbox, letterbox_to_tensor, plan_letterbox  # noqa: E402

_255 = np.float32(255.0)


def divide_way(image: np.ndarray, plan: Letterbox, out: np.ndarray, scratch: np.ndarray | None) -> None:
    """The former hot path: the resize, then one division over the transposed view."""
    resized = image
    if scratch is not None:
        cv2.resize(image, (plan.new_w, plan.new_h), dst=scratch, interpolation=cv2.INTER_LINEAR)
        resized = scratch
    window = out[:, plan.top:plan.top + plan.new_h, plan.left:plan.left + plan.new_w]
    np.divide(resized.transpose(2, 0, 1)[::-1], _255, out=window, casting="unsafe")


def cpu_us_per_frame(call: Callable[[], None], frames: int) -> float:
    t0 = time.thread_time()
    for _ in range(frames):
        call()
    return (time.thread_time() - t0) / frames * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1280x960", help="the camera's frame size WxH")
    ap.add_argument("--input", type=int, default=640, help="the model's square input size")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=200, help="frames timed per round and way")
    args = ap.parse_args()
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        ap.error(f"--size {args.size!r}: expected WxH, e.g. 1280x960")
    if min(w, h, args.input, args.rounds, args.frames) <= 0:
        ap.error("--size, --input, --rounds and --frames must be positive")
    cv2.setNumThreads(1)
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    plan = plan_letterbox(w, h, args.input, args.input)
    resize = (plan.new_w, plan.new_h) != (w, h)
    scratch = np.empty((plan.new_h, plan.new_w, 3), np.uint8) if resize else None
    old = np.full((3, args.input, args.input), np.float32(114) / _255, np.float32)
    new = old.copy()
    divide_way(image, plan, old, scratch)
    letterbox_to_tensor(image, plan, new, scratch, border_painted=True)
    if not np.array_equal(old.view(np.uint32), new.view(np.uint32)):
        print("the two ways differ: the benchmark's premise is broken", file=sys.stderr)
        return 1
    ways: dict[str, Callable[[], None]] = {
        "divide": lambda: divide_way(image, plan, old, scratch),
        "lut": lambda: letterbox_to_tensor(image, plan, new, scratch, border_painted=True),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, call in ways.items():
            times[name].append(cpu_us_per_frame(call, args.frames))
    print(f"letterbox {w}x{h} -> {args.input}x{args.input}, {args.rounds} rounds x {args.frames} frames, "
          "CPU us per frame (median of rounds):")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        spread = ", ".join(f"{v:.0f}" for v in times[name])
        print(f"  {name:<7} {value:8.1f} us   (rounds: {spread})")
    print(f"  lut is {medians['divide'] / medians['lut']:.2f}x the speed of divide; same numbers, bit for bit")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
