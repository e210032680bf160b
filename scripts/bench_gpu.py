#!/usr/bin/env python3
"""The prefilter on an NVIDIA GPU: TensorRT INT8 against FP16 against ONNX Runtime CUDA, batch 1 and 8.

    python scripts/bench_gpu.py [--frames 256] [--rounds 2] [--batches 1 8] [--limit-batch 64]
    python scripts/bench_gpu.py --cpu-smoke      # the same plumbing on ONNX Runtime's CPU provider

Needs a CUDA device and the ``gpu`` extra (onnxruntime-gpu) and/or the ``tensorrt`` extra (or JetPack's
TensorRT); the sides a box cannot run are named and skipped. Frames are synthetic conveyor stills
(640x480, seeded), letterboxed once by the detector's own ``prepare``. Each side runs in its own process
and times, for each batch size, ``forward`` (copies to and from the GPU included) and ``forward`` plus
the detector's decode, over every frame, in calls of that many frames:

* ``ort-cuda fp32``: ONNX Runtime, CUDA provider, the FP32 file;
* ``ort-trt fp16`` and ``ort-trt int8``: ONNX Runtime's TensorRT provider (engine cache on);
* ``native fp16`` and ``native int8``: the agent's own TensorRT runtime (``model.runtime: tensorrt``);
* ``engine only``: the native INT8 engine alone, inputs already on the GPU, no copies and no decode,
  at batch 1 and at ``--limit-batch``: the most this card does with this model.

INT8 for TensorRT is the S8S8 flavour (``models quantize --flavour tensorrt``), made here from the FP32
file with the shipped settings (the first two convolutions kept FP32; ``--calib-frames`` synthetic
frames); the shipped INT8 file is the CPU flavour, which TensorRT refuses. Engine builds happen in the
first round and are cached in a temporary folder, so they are not timed. Printed: frames per second and
ms per call for every side and batch, the ratios (INT8 / FP16, INT8 / ORT CUDA FP32, the ONNX Runtime
provider / the native runtime, INT8 batch 1 / the engine alone at batch 1 and at the limit batch), and
each side's box agreement with ONNX Runtime FP32 on the CPU.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

FP32 = REPO / "models" / "conveyor-yolov8n.onnx"
MATCH_IOU = 0.5
AGREEMENT_FRAMES = 64  # frames whose boxes are compared with the CPU reference

# side -> (model file: "fp32" | "int8-trt", ModelConfig fields)
GPU_SIDES: dict[str, tuple[str, dict[str, Any]]] = {
    "ort-cuda fp32": ("fp32", {"providers": ["cuda"]}),
    "ort-trt fp16": ("fp32", {"providers": ["tensorrt"], "precision": "fp16"}),
    "ort-trt int8": ("int8-trt", {"providers": ["tensorrt"], "precision": "int8"}),
    "native fp16": ("fp32", {"runtime": "tensorrt", "precision": "fp16"}),
    "native int8": ("int8-trt", {"runtime": "tensorrt", "precision": "int8"}),
}
CPU_SIDES: dict[str, tuple[str, dict[str, Any]]] = {  # --cpu-smoke: the plumbing, no GPU
    "ort-cpu fp32": ("fp32", {"providers": ["cpu"]}),
    "ort-cpu int8-trt": ("int8-trt", {"providers": ["cpu"]}),
}
ENGINE_ONLY = "engine only"


def stills(count: int, seed: int) -> list[np.ndarray]:
    from agent.capture.synthetic import render_still

    rng = np.random.default_rng(seed)
    return [render_still(rng)[0] for _ in range(count)]


def prepared(model: Any, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[Any]]:
    """Each image letterboxed by the detector's own ``prepare`` (a batch of one), with its plan."""
    tensors, plans = [], []
    for image in images:
        tensor, (plan,) = model.prepare([image], model.new_input())
        tensors.append(tensor.copy())
        plans.append(plan)
    return tensors, plans


def box_rows(results: list[Any]) -> dict[str, list[list[float]]]:
    return {str(i): [[*d.box, d.class_id, d.confidence] for d in r.detections] for i, r in enumerate(results)}


# ---------------------------------------------------------------------------------------------- workers


def worker_side(args: argparse.Namespace) -> dict[str, Any]:
    from agent.config.models import ModelConfig
    from agent.prefilter.factory import open_prefilter

    file, fields = {**GPU_SIDES, **CPU_SIDES}[args.side]
    path = args.fp32 if file == "fp32" else args.int8_trt
    config = ModelConfig(path=path, max_batch=max(args.batches), concurrent_runs=1,
                         engine_cache_dir=args.engines, **fields)
    t0 = time.perf_counter()
    model = open_prefilter(path, config)  # builds the engine the first time (cached for later rounds)
    load_s = time.perf_counter() - t0
    tensors, plans = prepared(model, stills(args.frames, args.seed))
    out: dict[str, Any] = {"load_s": load_s, "providers": list(model.session.get_providers()),
                           "max_batch": model.max_batch, "batches": {}}
    for batch in args.batches:
        if batch > model.max_batch:
            out["batches"][str(batch)] = {"skipped": f"the session takes at most {model.max_batch} frames a call"}
            continue
        calls = [(np.concatenate(tensors[i:i + batch]), plans[i:i + batch]) for i in range(0, len(tensors), batch)]
        for x, _p in calls[:3]:
            model.forward(x)  # warm-up: first calls allocate and pick kernels
        forward_ms, whole_ms, results = [], [], []
        start = time.perf_counter()
        for x, p in calls:
            c0 = time.perf_counter()
            output = model.forward(x)
            forward_ms.append((time.perf_counter() - c0) * 1000.0)
            results += model.finish(output, p, 0.0)
            whole_ms.append((time.perf_counter() - c0) * 1000.0)
        elapsed = time.perf_counter() - start
        out["batches"][str(batch)] = {
            "fps": len(tensors) / elapsed, "forward_fps": len(tensors) / (sum(forward_ms) / 1000.0),
            "forward_ms_p50": statistics.median(forward_ms), "call_ms_p50": statistics.median(whole_ms),
            "boxes": box_rows(results[:AGREEMENT_FRAMES]) if batch == args.batches[0] else {}}
    return out


def worker_engine_only(args: argparse.Namespace) -> dict[str, Any]:
    """The native INT8 engine with a profile up to --limit-batch, run on its device buffers alone."""
    from agent.prefilter.tensorrt.builder import build_plan
    from agent.prefilter.tensorrt.engine import load_engine, prepare_model, read_model
    from agent.prefilter.tensorrt.engine_key import BatchProfile
    from agent.prefilter.tensorrt.platform import probe_platform

    proto, _meta = read_model(args.int8_trt)
    ready = prepare_model(args.int8_trt, proto, "int8", BatchProfile(1, args.limit_batch, args.limit_batch))
    platform = probe_platform(0)
    session, _entry, _built = load_engine(ready, args.engines, platform, build_plan, lambda line: None)
    out: dict[str, Any] = {"gpu": platform.gpu_name, "tensorrt": platform.tensorrt_version, "batches": {}}
    for batch in sorted({1, args.limit_batch}):
        for _ in range(20):
            session.run_resident(batch)
        calls = max(50, (4 * args.frames) // batch)
        start = time.perf_counter()
        for _ in range(calls):
            session.run_resident(batch)
        elapsed = time.perf_counter() - start
        out["batches"][str(batch)] = {"fps": calls * batch / elapsed, "call_ms_p50": elapsed * 1000.0 / calls}
    return out


# ---------------------------------------------------------------------------------------------- driver


def run_worker(side: str, common: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", side, *common]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:400]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def what_runs_here() -> tuple[set[str], list[str]]:
    """The GPU sides this box can run, and why the others cannot."""
    runnable: set[str] = set()
    missing: list[str] = []
    try:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
    except ImportError:
        available = set()
    for name, want in (("ort-cuda fp32", "CUDAExecutionProvider"), ("ort-trt fp16", "TensorrtExecutionProvider"),
                       ("ort-trt int8", "TensorrtExecutionProvider")):
        if want in available:
            runnable.add(name)
        else:
            missing.append(f"{name}: this onnxruntime has no {want} (pip install -e '.[gpu]')")
    try:
        from agent.prefilter.tensorrt.platform import probe_platform

        platform = probe_platform(0)
    except Exception as exc:  # noqa: BLE001 - ModelError or an import error: said, then skipped
        missing.append(f"native fp16/int8, engine only: {exc}")
    else:
        runnable |= {"native fp16", "native int8", ENGINE_ONLY}
        print(f"GPU: {platform.gpu_name} (sm {platform.compute_capability}), TensorRT {platform.tensorrt_version}")
    return runnable, missing


def make_int8_trt(fp32: pathlib.Path, out: pathlib.Path, frames: int) -> pathlib.Path:
    """The TensorRT INT8 flavour of ``fp32`` (S8S8 symmetric, first two convolutions FP32), calibrated on
    synthetic conveyor frames, with a progress line."""
    from agent.config.models import ModelConfig
    from agent.prefilter.factory import open_prefilter
    from agent.tooling.quantize import calibration
    from agent.tooling.quantize.int8 import FLAVOURS, quantize_model

    model = open_prefilter(fp32, ModelConfig(path=fp32, max_batch=1))
    calib = calibration.synthetic(frames, seed=3)

    def tensors() -> Any:
        for frame in calib.frames():
            yield model.preprocess(frame)[0].copy()

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"  calibrating the TensorRT INT8 flavour: {done}/{total} frames", flush=True)

    quantize_model(fp32, out, FLAVOURS["tensorrt"], model.info.input_name, tensors(), calib.count, float_stem=2,
                   progress=progress)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=256, help="frames per side and batch size")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--limit-batch", type=int, default=64, help="the engine-only side's large batch")
    ap.add_argument("--calib-frames", type=int, default=200)
    ap.add_argument("--model", type=pathlib.Path, default=FP32, help="an FP32 YOLOv8-layout detector")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="no GPU: run the ONNX Runtime sides on the CPU provider (few frames), to check the script")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--fp32", type=pathlib.Path, help=argparse.SUPPRESS)
    ap.add_argument("--int8-trt", type=pathlib.Path, help=argparse.SUPPRESS)
    ap.add_argument("--engines", type=pathlib.Path, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=21, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.side = args.worker
        work = worker_engine_only if args.worker == ENGINE_ONLY else worker_side
        print(json.dumps(work(args)), flush=True)
        return 0
    if args.frames < max(args.batches) or min(args.batches) < 1 or max(args.batches) > 16 or args.rounds < 1:
        print("--batches must be 1..16 (model.max_batch), --frames at least the largest batch, --rounds >= 1",
              file=sys.stderr)
        return 2
    if not args.model.is_file():
        print(f"model file {args.model} does not exist; expected an FP32 ONNX detector (e.g. {FP32})", file=sys.stderr)
        return 2
    if args.cpu_smoke:
        sides = list(CPU_SIDES)
        args.frames, args.rounds, args.calib_frames = min(args.frames, 32), 1, min(args.calib_frames, 16)
    else:
        runnable, missing = what_runs_here()
        for line in missing:
            print(f"skipped: {line}")
        sides = [s for s in [*GPU_SIDES, ENGINE_ONLY] if s in runnable]
        if not sides:
            print("no GPU side can run on this box: nothing to measure (see above; --cpu-smoke checks the script "
                  "itself on the CPU)", file=sys.stderr)
            return 2
    return compare(args, sides)


def compare(args: argparse.Namespace, sides: list[str]) -> int:
    from agent.config.models import ModelConfig
    from agent.prefilter.factory import open_prefilter
    from agent.tooling.evaluation.agreement import box_agreement

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        int8_trt = make_int8_trt(args.model, tmp / (args.model.stem + ".int8-trt.onnx"), args.calib_frames)
        reference = open_prefilter(args.model, ModelConfig(path=args.model, max_batch=1, concurrent_runs=1))
        tensors, plans = prepared(reference, stills(min(args.frames, AGREEMENT_FRAMES), args.seed))
        cpu_boxes = box_rows([reference.finish(reference.forward(t), [p], 0.0)[0] for t, p in zip(tensors, plans,
                                                                                                strict=True)])
        common = ["--fp32", str(args.model), "--int8-trt", str(int8_trt), "--engines", str(tmp / "engines"),
                  "--frames", str(args.frames), "--batches", *map(str, args.batches), "--limit-batch",
                  str(args.limit_batch), "--seed", str(args.seed)]
        results: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
        for r in range(args.rounds):
            turn = sides[r % len(sides):] + sides[:r % len(sides)]
            for side in turn:
                result = run_worker(side, common)
                results[side].append(result)
                if "error" in result:
                    print(f"  round {r + 1}: {side} failed: {result['error']}", flush=True)
                    continue
                cells = ", ".join(f"b{b} {v['fps']:.0f}" for b, v in result["batches"].items() if "fps" in v)
                print(f"  round {r + 1}/{args.rounds}: {side}: {cells} frames/s"
                      + (f" (loaded in {result['load_s']:.1f} s)" if "load_s" in result else ""), flush=True)
    agreement: dict[str, dict[str, float]] = {}
    for side, runs in results.items():
        last = [r for r in runs if "batches" in r]
        boxes = last[-1]["batches"].get(str(args.batches[0]), {}).get("boxes") if last else None
        if boxes:
            agreement[side] = box_agreement(boxes, cpu_boxes, MATCH_IOU)
    report(args, results)
    print(f"\nbox agreement with ONNX Runtime FP32 on the CPU (first {len(cpu_boxes)} frames, batch "
          f"{args.batches[0]}, same class and IoU >= {MATCH_IOU}):")
    for side, agree in agreement.items():
        print(f"  {side:<18} matched {agree['matched']}, only {side} {agree['only_a']}, only the CPU "
              f"{agree['only_b']}; IoU mean {agree['mean_iou']:.4f} min {agree['min_iou']:.4f}; |confidence "
              f"difference| mean {agree['mean_conf_diff']:.4f} max {agree['max_conf_diff']:.4f}")
    return 0


def report(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> None:

    def fps(side: str, batch: int, key: str = "fps") -> float | None:
        values = [r["batches"][str(batch)][key] for r in results.get(side, [])
                  if "batches" in r and key in r["batches"].get(str(batch), {})]
        return statistics.median(values) if values else None

    print("\nframes per second (median over rounds); forward only in brackets; ms per call p50:")
    for side, runs in results.items():
        ok = [r for r in runs if "batches" in r]
        if not ok:
            print(f"  {side:<18} failed: {runs[-1].get('error', '?')}")
            continue
        for b, v in ok[-1]["batches"].items():
            if "skipped" in v:
                print(f"  {side:<18} b{b:<3} skipped: {v['skipped']}")
                continue
            forward = fps(side, int(b), "forward_fps")
            print(f"  {side:<18} b{b:<3} {fps(side, int(b)):8.1f}"
                  + (f" ({forward:8.1f})" if forward is not None else "")
                  + f"   {v['call_ms_p50']:.2f} ms/call" + (f" on {', '.join(ok[-1]['providers'])}"
                                                            if "providers" in ok[-1] else ""))

    print("\nratios (frames per second, medians):")

    def ratio(text: str, a: tuple[str, int], b: tuple[str, int]) -> None:
        x, y = fps(*a), fps(*b)
        if x is not None and y is not None:
            print(f"  {text:<60} {x / y:6.2f}x")

    for batch in args.batches:
        ratio(f"native int8 / native fp16, batch {batch}", ("native int8", batch), ("native fp16", batch))
        ratio(f"native int8 / ort-cuda fp32, batch {batch}", ("native int8", batch), ("ort-cuda fp32", batch))
        ratio(f"ort-trt int8 / native int8, batch {batch}", ("ort-trt int8", batch), ("native int8", batch))
        ratio(f"ort-trt fp16 / native fp16, batch {batch}", ("ort-trt fp16", batch), ("native fp16", batch))
        ratio(f"ort-cpu int8-trt / ort-cpu fp32, batch {batch}", ("ort-cpu int8-trt", batch), ("ort-cpu fp32", batch))
    ratio("native int8 batch 1 / the engine alone at batch 1", ("native int8", 1), (ENGINE_ONLY, 1))
    ratio(f"native int8 batch 1 / the engine alone at batch {args.limit_batch} (the card's limit)",
          ("native int8", 1), (ENGINE_ONLY, args.limit_batch))
    ratio(f"native int8 batch {max(args.batches)} / the engine alone at batch {args.limit_batch}",
          ("native int8", max(args.batches)), (ENGINE_ONLY, args.limit_batch))


if __name__ == "__main__":
    raise SystemExit(main())
