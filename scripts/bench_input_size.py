#!/usr/bin/env python3
"""The bare detector at the camera's aspect ratio (``model.input_size``): CPU ms per frame side by side in one run.

    python scripts/bench_input_size.py [--sizes 320x320 256x320 192x320] [--runtimes onnxruntime openvino]
        [--frames 50] [--rounds 5] [--threads 1] [--models models/conveyor-yolov8n.onnx models/...int8.onnx]

For each model (default: the shipped detector, FP32 and INT8), each runtime and each input size (HxW; the
first is the model's own, the others come from agent.prefilter.input_size's graph rewrite), one session
with ``--threads`` threads runs the same real frame (a synthetic conveyor frame at 1280x960, letterboxed to
that size) ``--frames`` times a round, in interleaved rounds (size after size, runtime after runtime), so
load from other processes hits every variant alike. Printed per variant: process CPU ms per frame (median
of the rounds; what the model costs the box, little moved by other load) and wall ms per frame, and both
as a ratio to the model's own size on the same runtime.
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import sys
import tempfile
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from agent.capture.synthetic import render_still  # noqa: E402
from agent.config.models import DEFAULT_MODEL, DEFAULT_PREFILTER, ModelConfig  # noqa: E402
from agent.prefilter.gate_record import file_precision  # noqa: E402
from agent.prefilter.letterbox import letterbox_to_tensor, plan_letterbox  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected HxW, e.g. 256x320") from None
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f"size {text!r}: each side must be a positive multiple of 32")
    return h, w


def open_bare(path: pathlib.Path, runtime: str, size: tuple[int, int], threads: int, cache: pathlib.Path) -> Any:
    """A session of ``path`` at ``size`` (the exported graph where it is the model's own size)."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    own = (dims[2].dim_value, dims[3].dim_value)
    input_size = None if size == own else size
    if runtime == "openvino":
        from agent.prefilter.openvino_session import open_openvino_session

        config = ModelConfig(path=path, runtime="openvino", intra_op_threads=threads, concurrent_runs=1,
                             max_batch=1, engine_cache_dir=cache)
        return open_openvino_session(path, config, "detect", input_size)[0]
    from agent.prefilter.onnx_session import open_session

    return open_session(path, ["CPUExecutionProvider"], threads, 1, input_size=input_size)[0]


def tensor_for(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    plan = plan_letterbox(image.shape[1], image.shape[0], size[1], size[0])
    out = np.empty((1, 3, size[0], size[1]), np.float32)
    scratch = np.empty((plan.new_h, plan.new_w, 3), np.uint8)
    letterbox_to_tensor(image, plan, out[0], scratch)
    return out


def measure(session: Any, tensor: np.ndarray, frames: int) -> tuple[float, float]:
    """(process CPU ms, wall ms) per frame over ``frames`` runs."""
    name = session.get_inputs()[0].name
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(frames):
        session.run(None, {name: tensor})
    return ((time.process_time() - c0) * 1000.0 / frames, (time.perf_counter() - t0) * 1000.0 / frames)


def runtimes_installed(wanted: list[str]) -> list[str]:
    out = []
    for runtime in wanted:
        if runtime == "openvino":
            from agent.prefilter.openvino_session import openvino_version

            if openvino_version() is None:
                print("skipped: openvino (the `openvino` extra is not installed)")
                continue
        out.append(runtime)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", type=pathlib.Path, default=[DEFAULT_MODEL, DEFAULT_PREFILTER])
    ap.add_argument("--sizes", nargs="+", type=parse_size, default=[(320, 320), (256, 320), (192, 320)],
                    help="input sizes HxW; the first is the reference (the shipped detector's own: 320x320)")
    ap.add_argument("--runtimes", nargs="+", choices=("onnxruntime", "openvino"), default=["onnxruntime", "openvino"])
    ap.add_argument("--frames", type=int, default=50, help="model runs per variant per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="threads of each session (the agent's default on 2 cores)")
    args = ap.parse_args()
    runtimes = runtimes_installed(args.runtimes)
    image = cv2.resize(render_still(np.random.default_rng(7))[0], (1280, 960))
    variants = [(m, r, s) for m in args.models for r in runtimes for s in args.sizes]
    cpu: dict[Any, list[float]] = {v: [] for v in variants}
    wall: dict[Any, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as cache:
        sessions = {v: open_bare(v[0], v[1], v[2], args.threads, pathlib.Path(cache)) for v in variants}
        tensors = {s: tensor_for(image, s) for s in args.sizes}
        for v, session in sessions.items():
            measure(session, tensors[v[2]], 5)  # warm-up: first runs allocate and pick kernels
        for _ in range(args.rounds):
            for v, session in sessions.items():
                c, w = measure(session, tensors[v[2]], args.frames)
                cpu[v].append(c)
                wall[v].append(w)
    print(f"bare detector, {args.threads} thread(s), a 1280x960 frame letterboxed to each size, {args.frames} runs x "
          f"{args.rounds} interleaved rounds, {platform.processor() or platform.machine()}; medians of the rounds")
    print(f"{'model':<28} {'prec':<5} {'runtime':<12} {'input HxW':<10} {'CPU ms/frame':>12} {'vs own':>7} "
          f"{'wall ms/frame':>13} {'vs own':>7}")
    for v in variants:
        ref = (v[0], v[1], args.sizes[0])
        c, w = float(np.median(cpu[v])), float(np.median(wall[v]))
        c0, w0 = float(np.median(cpu[ref])), float(np.median(wall[ref]))
        print(f"{v[0].name:<28} {file_precision(v[0]):<5} {v[1]:<12} {v[2][0]}x{v[2][1]:<6} {c:>12.2f} {c / c0:>6.2f}x "
              f"{w:>13.2f} {w / w0:>6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
