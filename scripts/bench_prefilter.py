#!/usr/bin/env python3
"""FP32 vs INT8 prefilter speed, side by side in one run, same threads, same inputs.

    python scripts/bench_prefilter.py [--threads 2] [--frames 40] [--rounds 6]
    python scripts/bench_prefilter.py --pair models/x.onnx models/x.int8.onnx
    python scripts/bench_prefilter.py --pair runs/classifier/conveyor-resnet-cls.onnx \
        models/conveyor-resnet-cls.int8.onnx     # the classifier's FP32 source is rebuilt, not shipped

For every shipped FP32 model with an INT8 sibling (``<stem>.int8.onnx``; the
TensorRT flavour ``<stem>.int8-trt.onnx`` is shown too, for the record), the same
synthetic conveyor frames go through each variant in interleaved rounds (FP32,
INT8, FP32, INT8, ...), so load from other processes hits all variants alike.

Printed per variant, two views:

1. latency, one stream (the agent's settings: ``--threads`` intra-op threads, no
   spinning): the whole prefilter call (letterbox/resize, inference, decode) and
   the bare ``session.run`` on a ready tensor, as ms/frame p50 and p99, and the
   speed-up of p50 against FP32 of the same model;
2. throughput with every core busy: one process per core, each its own session with
   one intra-op thread, whole prefilter calls for ``--seconds``, frames/s summed over
   the processes and its ratio to FP32 (how many frames the box can inspect).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pathlib
import platform
import sys
import time
from typing import Any

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
    for int8 in sorted(models.glob("*.int8.onnx")):
        if not int8.with_name(int8.name.replace(".int8.onnx", ".onnx")).exists():
            print(f"note: {int8.name}'s FP32 source is not shipped (too large for the repository); rebuild it as "
                  "its model card says and pass --pair FP32 INT8", file=sys.stderr)
    for fp32 in sorted(models.glob("*.onnx")):
        if ".int8" in fp32.name:
            continue
        variants = [fp32] + [p for p in (fp32.with_name(fp32.stem + ".int8.onnx"),
                                         fp32.with_name(fp32.stem + ".int8-trt.onnx")) if p.exists()]
        if len(variants) > 1:
            groups.append(variants)
    return groups


def bench_group(paths: list[pathlib.Path], frames: list[np.ndarray], threads: int, rounds: int,
                warmup: int, skip_slow: bool) -> dict[pathlib.Path, dict[str, float]]:
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
    out = {}
    for p in paths:
        i50, i99 = percentile(infer_ms[p], 50), percentile(infer_ms[p], 99)
        r50, r99 = percentile(run_ms[p], 50), percentile(run_ms[p], 99)
        print(f"{p.name:<34} {file_precision(p):<5} {i50:>8.2f}  {i99:>6.2f} {r50:>8.2f} {r99:>7.2f} "
              f"{1000.0 / i50:>9.1f} {base_infer / i50:>8.2f}x {base_run / r50:>12.2f}x")
        out[p] = {"call_p50": i50, "call_p99": i99, "run_p50": r50, "speedup": base_infer / i50,
                  "run_speedup": base_run / r50}
    return out


def _throughput_worker(path: str, seconds: float, barrier: Any, results: Any) -> None:
    """One worker of the throughput test: its own session with one intra-op thread, whole prefilter calls."""
    model = open_prefilter(pathlib.Path(path), ModelConfig(path=pathlib.Path(path), intra_op_threads=1))
    rng = np.random.default_rng(42)
    frames = [render_still(rng)[0] for _ in range(20)]
    for f in frames[:5]:
        model.infer(f)
    barrier.wait()
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        model.infer(frames[done % len(frames)])
        done += 1
    results.put(done)


def throughput_group(paths: list[pathlib.Path], workers: int, seconds: float, rounds: int,
                     skip_slow: bool) -> dict[pathlib.Path, dict[str, float]]:
    """Frames/s with every core busy: ``workers`` processes, one intra-op thread each, all at once,
    in interleaved rounds (FP32, INT8, FP32, INT8, ...)."""
    ctx = multiprocessing.get_context("spawn")
    totals: dict[pathlib.Path, list[float]] = {p: [] for p in paths}
    for _ in range(rounds):
        for p in paths:
            if skip_slow and p.name.endswith(".int8-trt.onnx") and totals[p]:
                continue
            barrier, results = ctx.Barrier(workers), ctx.Queue()
            procs = [ctx.Process(target=_throughput_worker, args=(str(p), seconds, barrier, results))
                     for _ in range(workers)]
            for proc in procs:
                proc.start()
            counts = [results.get(timeout=120 + seconds) for _ in procs]
            for proc in procs:
                proc.join()
            totals[p].append(sum(counts) / seconds)
    base = float(np.median(totals[paths[0]]))
    print(f"throughput, {workers} worker processes x 1 intra-op thread, {seconds:g} s x {rounds} interleaved rounds "
          "(whole prefilter calls):")
    print(f"{'variant':<34} {'prec':<5} {'frames/s':>9} {'min':>7} {'max':>7} {'vs FP32':>8}")
    out = {}
    for p in paths:
        med = float(np.median(totals[p]))
        print(f"{p.name:<34} {file_precision(p):<5} {med:>9.1f} {min(totals[p]):>7.1f} {max(totals[p]):>7.1f} "
              f"{med / base:>7.2f}x")
        out[p] = {"fps": med, "ratio": med / base}
    return out


SPEED_BEGIN = "<!-- speed:begin (written by `python scripts/bench_prefilter.py --write-cards`) -->"
SPEED_END = "<!-- speed:end -->"


def write_card(paths: list[pathlib.Path], latency: dict[pathlib.Path, dict[str, float]],
               throughput: dict[pathlib.Path, dict[str, float]], header: str, command: str) -> None:
    """The speed section of the FP32 model's card (``<stem>.md`` next to it), replaced on every run."""
    import datetime
    import re

    card = paths[-1].with_name(paths[0].stem + ".md")  # next to the shipped INT8 file (its FP32 source may not be)
    if not card.exists():
        return
    rows = []
    for p in paths:
        lat, thr = latency[p], throughput.get(p)
        rows.append(f"| `{p.name}` | {file_precision(p)} | {lat['call_p50']:.2f} | {lat['call_p99']:.2f} | "
                    f"{lat['speedup']:.2f}x | " + (f"{thr['fps']:.0f} | {thr['ratio']:.2f}x |" if thr else "— | — |"))
    section = "\n".join([
        SPEED_BEGIN, "## Speed on the CPU", "",
        f"Measured {datetime.date.today().isoformat()}: {header}. Latency: one stream, the whole prefilter call "
        "(letterbox, inference, decode), the agent's settings. Throughput: one process per core, one intra-op "
        "thread each, all busy at once: how many frames the box can inspect.", "",
        "| file | precision | call p50 ms | p99 ms | latency speed-up | throughput frames/s | throughput vs FP32 |",
        "|---|---|---|---|---|---|---|", *rows, "", "Reproduce:", "", f"    {command}", SPEED_END])
    text = card.read_text()
    pattern = re.compile(re.escape(SPEED_BEGIN) + ".*?" + re.escape(SPEED_END), re.S)
    text = pattern.sub(lambda _m: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    card.write_text(text if text.endswith("\n") else text + "\n")
    print(f"model card: {card} (speed section)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs=2, action="append", type=pathlib.Path, metavar=("FP32", "INT8"),
                    help="models to compare (default: every shipped model with an INT8 sibling)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads, the same for all")
    ap.add_argument("--frames", type=int, default=40, help="distinct synthetic frames per round")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds over all variants")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes in the throughput test (default: one per core); 0 skips it")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of one throughput round")
    ap.add_argument("--throughput-rounds", type=int, default=3)
    ap.add_argument("--write-cards", action="store_true",
                    help="write the numbers into each FP32 model's card (<stem>.md), section 'Speed on the CPU'")
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
    header = (f"onnxruntime {onnxruntime.__version__}, {os.cpu_count()} cores ({cpu}), {args.threads} intra-op threads")
    print(f"{header}, {args.frames} frames x {args.rounds} interleaved rounds; 'call' = the whole prefilter call, "
          "'run' = session.run alone")
    for group in groups:
        latency = bench_group(group, frames, args.threads, args.rounds, args.warmup, not args.all_rounds_trt)
        throughput = {}
        if args.workers > 0:
            throughput = throughput_group(group, args.workers, args.seconds, args.throughput_rounds,
                                          not args.all_rounds_trt)
        if args.write_cards:
            write_card(group, latency, throughput, header,
                       "python scripts/bench_prefilter.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
