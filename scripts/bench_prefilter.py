#!/usr/bin/env python3
"""FP32 vs INT8 prefilter speed, side by side in one run, same threads, same inputs.

    python scripts/bench_prefilter.py [--threads 2] [--frames 40] [--rounds 6]
    python scripts/bench_prefilter.py --pair models/x.onnx models/x.int8.onnx

For every shipped FP32 model with an INT8 sibling (``<stem>.int8.onnx``; the
TensorRT flavour ``<stem>.int8-trt.onnx`` is shown too, for the record), the same
synthetic conveyor frames go through each variant in interleaved rounds (FP32,
INT8, FP32, INT8, ...), so load from other processes hits all variants alike.

Printed per variant: the whole prefilter call (letterbox/resize, inference,
decode) and the bare ``session.run`` on a ready tensor, as ms/frame p50 and p99,
and the speed-up of p50 against FP32 of the same model.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

from agent.capture.synthetic import render_still  # noqa: E402
from agent.config.models import ModelConfig  # noqa: E402
from agent.prefilter.factory import PrefilterModel, open_prefilter  # noqa: E402
from agent.prefilter.gate_record import file_precision  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def shipped_pairs(models: pathlib.Path) -> list[list[pathlib.Path]]:
    groups = []
    for fp32 in sorted(models.glob("*.onnx")):
        if ".int8" in fp32.name:
            continue
        variants = [fp32] + [p for p in (fp32.with_name(fp32.stem + ".int8.onnx"),
                                         fp32.with_name(fp32.stem + ".int8-trt.onnx")) if p.exists()]
        if len(variants) > 1:
            groups.append(variants)
    return groups


def bench_group(paths: list[pathlib.Path], frames: list[np.ndarray], threads: int, rounds: int,
                warmup: int, skip_slow: bool) -> None:
    models: dict[pathlib.Path, PrefilterModel] = {
        p: open_prefilter(p, ModelConfig(path=p, intra_op_threads=threads)) for p in paths}
    tensors = {p: m.preprocess(frames[0])[0].copy() for p, m in models.items()}
    infer_ms: dict[pathlib.Path, list[float]] = {p: [] for p in paths}
    run_ms: dict[pathlib.Path, list[float]] = {p: [] for p in paths}
    for m in models.values():  # warm-up: first runs allocate and pick kernels
        for f in frames[:warmup]:
            m.infer(f)
    for _ in range(rounds):
        for p, m in models.items():
            if skip_slow and p.name.endswith(".int8-trt.onnx") and len(infer_ms[p]) >= len(frames):
                continue  # one round of the TensorRT flavour is enough to show it is not for the CPU
            for f in frames:
                t0 = time.perf_counter()
                m.infer(f)
                infer_ms[p].append((time.perf_counter() - t0) * 1000.0)
            for _ in range(len(frames)):
                t0 = time.perf_counter()
                m.forward(tensors[p])
                run_ms[p].append((time.perf_counter() - t0) * 1000.0)
    base = paths[0]
    base_infer, base_run = percentile(infer_ms[base], 50), percentile(run_ms[base], 50)
    first = models[base].info
    print(f"\n{first.model_id} ({first.task}, {len(first.names)} classes, input {first.input_w}x{first.input_h})")
    print(f"{'variant':<34} {'prec':<5} {'call p50':>9} {'p99':>7} {'run p50':>8} {'p99':>7} "
          f"{'frames/s':>9} {'speed-up':>9} {'run speed-up':>13}")
    for p in paths:
        i50, i99 = percentile(infer_ms[p], 50), percentile(infer_ms[p], 99)
        r50, r99 = percentile(run_ms[p], 50), percentile(run_ms[p], 99)
        print(f"{p.name:<34} {file_precision(p):<5} {i50:>8.2f}  {i99:>6.2f} {r50:>8.2f} {r99:>7.2f} "
              f"{1000.0 / i50:>9.1f} {base_infer / i50:>8.2f}x {base_run / r50:>12.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs=2, action="append", type=pathlib.Path, metavar=("FP32", "INT8"),
                    help="models to compare (default: every shipped model with an INT8 sibling)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads, the same for all")
    ap.add_argument("--frames", type=int, default=40, help="distinct synthetic frames per round")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds over all variants")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--all-rounds-trt", action="store_true",
                    help="time the TensorRT flavour in every round (slow on a CPU)")
    args = ap.parse_args()
    groups = [list(p) for p in args.pair] if args.pair else shipped_pairs(REPO / "models")
    if not groups:
        print("no FP32 model with an INT8 sibling under models/; run `edge-agent models quantize` first",
              file=sys.stderr)
        return 2
    rng = np.random.default_rng(42)
    frames = [render_still(rng)[0] for _ in range(args.frames)]
    cpu = platform.processor() or platform.machine()
    print(f"onnxruntime {onnxruntime.__version__}, {os.cpu_count()} cores ({cpu}), {args.threads} intra-op threads, "
          f"{args.frames} frames x {args.rounds} interleaved rounds; 'call' = the whole prefilter call, "
          "'run' = session.run alone")
    for group in groups:
        bench_group(group, frames, args.threads, args.rounds, args.warmup, not args.all_rounds_trt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
