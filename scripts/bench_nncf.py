#!/usr/bin/env python3
"""Our Q/DQ INT8 against NNCF's INT8 on OpenVINO: CPU per frame, frames/s and mAP50, side by side in one run.

    PYTHONPATH=$PWD /work/venv-train/bin/python scripts/bench_nncf.py --out /var/tmp/nncf
    python scripts/bench_nncf.py --out /var/tmp/nncf --skip-quantize   # reuse the IRs (no nncf needed)

1. Quantizes the FP32 detector with NNCF (``nncf.quantize`` on the OpenVINO model read
   from the ONNX file), calibrated on the same 300 synthetic conveyor frames (seed 1000)
   as the shipped Q/DQ file, each letterboxed by the agent's own ``preprocess``, in
   variants: preset ``mixed`` / ``performance``, nothing ignored / the decode ignored
   (what ultralytics' OpenVINO INT8 export ignores: the head's own ops after its last
   convolutions) / the decode and the first two convolutions ignored (what our Q/DQ
   keeps FP32). Each is saved as an IR (``<out>/<variant>.xml``); the ONNX metadata
   (task, class names) stays in its ``rt_info``.
2. Accuracy: mAP50 and per-image triage verdicts on the held-out split the quantize gate
   uses (``edge-agent models quantize --val synthetic``: training seed 7, 150 images),
   through the gate's own evaluation and judge, every model on OpenVINO (FP32 and the
   Q/DQ file on ONNX Runtime too, for reference).
3. Speed: every model on OpenVINO the way the agent compiles it (``model.runtime:
   openvino``), a ready tensor, ``R`` Python threads each calling ``run`` for
   ``--seconds``, setups 2x1 (two runs of one thread) and 1x2, models and setups in
   alternating rounds. Printed per round and as medians: frames/s (wall) and CPU ms per
   frame (the process's CPU time over the frames), and each model's ratio to the Q/DQ file
   (median of per-round ratios). CPU per frame is what other load on the box disturbs least.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import pathlib
import sys
import tempfile
import threading
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from agent.config.models import ModelConfig, TriageConfig  # noqa: E402
from agent.prefilter.factory import open_prefilter  # noqa: E402

FP32 = REPO / "models" / "conveyor-yolov8n.onnx"
QDQ = REPO / "models" / "conveyor-yolov8n.int8.onnx"
SETUPS = ((2, 1), (1, 2))  # (concurrent runs, threads per run): the agent's two ways to use two cores


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    preset: str  # "mixed" | "performance"
    ignore: str  # "none" | "decode" | "decode+stem1" | "decode+stem2"
    minmax: bool = False  # activation ranges: global min/max over the frames (ours) instead of NNCF's mean of them
    bias_correction: bool = True  # NNCF's (fast) bias correction after quantizing


VARIANTS = (
    Variant("nncf-mixed", "mixed", "none"),  # nothing kept float
    Variant("nncf-mixed-decode", "mixed", "decode"),  # ultralytics' OpenVINO INT8 export
    Variant("nncf-perf-decode-stem1-minmax", "performance", "decode+stem1", minmax=True),
    Variant("nncf-perf-decode-stem2", "performance", "decode+stem2"),  # what our Q/DQ keeps float, NNCF's ranges
    Variant("nncf-perf-decode-stem2-minmax", "performance", "decode+stem2", minmax=True),  # ... and our ranges
    Variant("nncf-mixed-decode-stem2-minmax", "mixed", "decode+stem2", minmax=True),
)


def calibration_tensors(count: int, seed: int) -> list[np.ndarray]:
    """The shipped Q/DQ file's calibration frames, letterboxed by the agent's own preprocess."""
    from agent.tooling.quantize import calibration

    model = open_prefilter(FP32, ModelConfig(path=FP32))
    return [model.preprocess(frame)[0].copy() for frame in calibration.synthetic(count, seed).frames()]


def ignored_names(ov_model: Any, ignore: str) -> list[str]:
    """The ops kept float: the decode (ultralytics' rule: the head's own ops, not its convolutions' branches)
    and, with ``stem2``, the first two convolutions (as our Q/DQ file keeps them)."""
    import onnx

    from agent.tooling.quantize.int8 import decode_nodes, stem_convolutions

    if ignore == "none":
        return []
    present = {op.get_friendly_name() for op in ov_model.get_ordered_ops()}
    proto = onnx.load(str(FP32))
    stem = {"decode": 0, "decode+stem1": 1, "decode+stem2": 2}[ignore]
    wanted = decode_nodes(proto) + stem_convolutions(proto, stem)
    # OpenVINO splits an ONNX Conv with a bias into a Convolution "<name>/WithoutBiases" and an Add "<name>"
    return [n for name in wanted for n in (name, f"{name}/WithoutBiases") if n in present]


def _advanced(v: Variant) -> Any:
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    extra = {"activations_range_estimator_params": RangeEstimatorParametersSet.MINMAX} if v.minmax else {}
    return AdvancedQuantizationParameters(disable_bias_correction=not v.bias_correction, **extra)


def quantize_variants(out: pathlib.Path, tensors: list[np.ndarray], variants: list[Variant]) -> None:
    import nncf
    import openvino as ov

    out.mkdir(parents=True, exist_ok=True)
    for v in variants:
        model = ov.Core().read_model(str(FP32))
        names = ignored_names(model, v.ignore)
        t0 = time.perf_counter()
        quantized = nncf.quantize(
            model, nncf.Dataset(tensors), subset_size=len(tensors),
            preset=nncf.QuantizationPreset.MIXED if v.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
            ignored_scope=nncf.IgnoredScope(names=names) if names else None, advanced_parameters=_advanced(v))
        ov.save_model(quantized, str(out / f"{v.name}.xml"), compress_to_fp16=False)
        print(f"quantized {v.name}: {len(names)} ops ignored, {time.perf_counter() - t0:.1f} s", flush=True)


def accuracy(models: list[tuple[str, pathlib.Path, str]], count: int) -> None:
    from agent.tooling.dataset.synth import write_synthetic_dataset
    from agent.tooling.evaluation.dataset import read_yolo_dataset
    from agent.tooling.evaluation.gate import GateLimits, judge
    from agent.tooling.quantize.workflow import evaluate_model

    band = TriageConfig()
    names = open_prefilter(FP32, ModelConfig(path=FP32)).info.names
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_dataset(pathlib.Path(tmp), 1, count, seed=7)
        dataset = read_yolo_dataset(pathlib.Path(tmp), "val", names=names)
        evals = {label: evaluate_model(path, dataset, band, 2, label, runtime)
                 for label, path, runtime in models}
    base = evals["fp32 ov"]
    print(f"\naccuracy: {len(dataset.images)} held-out images (training seed 7), band accept {band.accept} "
          f"reject {band.reject}; gate against FP32 on OpenVINO (1 point, 2 % of verdicts)")
    print(f"{'model':<30} {'mAP50':>7} {'drop pts':>9} {'verdicts changed':>17}  gate")
    for label, ev in evals.items():
        result = judge(base.metric, base.value, ev.value, base.verdicts, ev.verdicts, GateLimits(1.0, 2.0))
        print(f"{label:<30} {ev.value:>7.4f} {(base.value - ev.value) * 100:>9.2f} "
              f"{result.verdicts_changed:>11}/{result.images:<5}  {'pass' if result.passed else 'REFUSED'}")


def _one(session: Any, feed: dict[str, np.ndarray], runs: int, seconds: float) -> tuple[float, float]:
    """(frames/s, CPU ms per frame) of ``runs`` threads calling ``session.run`` for ``seconds``."""
    counts = [0] * runs
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            session.run(None, feed)
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(runs)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall, cpu, frames = time.perf_counter() - t0, time.process_time() - cpu0, max(1, sum(counts))
    return frames / wall, cpu * 1000.0 / frames


def speed(models: list[tuple[str, pathlib.Path]], setups: list[tuple[int, int]], rounds: int, seconds: float,
          cache: pathlib.Path) -> None:
    from agent.prefilter.openvino_session import open_openvino_session

    tensor = calibration_tensors(1, 5)[0]
    sessions: dict[tuple[str, tuple[int, int]], Any] = {}
    for label, path in models:
        for runs, threads in setups:
            cfg = ModelConfig(path=path, runtime="openvino", concurrent_runs=runs, intra_op_threads=threads,
                              engine_cache_dir=cache)
            session, _meta = open_openvino_session(path, cfg, "detect")
            feed = {session.get_inputs()[0].name: tensor}
            for _ in range(10):
                session.run(None, feed)
            sessions[(label, (runs, threads))] = (session, feed)
    results: dict[tuple[str, tuple[int, int]], list[tuple[float, float]]] = {k: [] for k in sessions}
    for r in range(rounds):
        for (label, setup), (session, feed) in sessions.items():
            results[(label, setup)].append(_one(session, feed, setup[0], seconds))
        print(f"round {r + 1}: " + "; ".join(f"{lab} {s[0]}x{s[1]} {v[-1][0]:.0f}/s {v[-1][1]:.2f} ms"
                                             for (lab, s), v in results.items()), flush=True)
    _print_speed(models, setups, results)


def _print_speed(models: list[tuple[str, pathlib.Path]], setups: list[tuple[int, int]],
                 results: dict[tuple[str, tuple[int, int]], list[tuple[float, float]]]) -> None:
    ref = models[0][0]
    print(f"\nspeed on OpenVINO, medians over rounds; ratios: median of per-round ratios to {ref}")
    print(f"{'model':<30} {'setup':>5} {'frames/s':>9} {'CPU ms/frame':>13} {'fps ratio':>10} {'CPU ratio':>10}")
    for label, _path in models:
        for setup in setups:
            own, base = results[(label, setup)], results[(ref, setup)]
            fps = float(np.median([x[0] for x in own]))
            cpu = float(np.median([x[1] for x in own]))
            fps_ratio = float(np.median([a[0] / b[0] for a, b in zip(own, base, strict=True)]))
            cpu_ratio = float(np.median([a[1] / b[1] for a, b in zip(own, base, strict=True)]))
            print(f"{label:<30} {setup[0]}x{setup[1]:<3} {fps:>9.1f} {cpu:>13.2f} {fps_ratio:>9.3f}x "
                  f"{cpu_ratio:>9.3f}x")


def _parse_setups(ap: argparse.ArgumentParser, values: list[str]) -> list[tuple[int, int]]:
    out = []
    for value in values:
        runs, _, threads = value.partition("x")
        if not (runs.isdigit() and threads.isdigit() and 1 <= int(runs) <= 8 and 1 <= int(threads) <= 8):
            ap.error(f"--setups {value!r}: expected RUNSxTHREADS such as 2x1 (1..8 each)")
        out.append((int(runs), int(threads)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=pathlib.Path, required=True, help="folder for the NNCF IRs")
    ap.add_argument("--skip-quantize", action="store_true", help="reuse the IRs already in --out")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--val-count", type=int, default=150,
                    help="images of the held-out split (the quantize gate's: 150)")
    ap.add_argument("--calib-count", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=4, help="alternating speed rounds")
    ap.add_argument("--seconds", type=float, default=1.5, help="length of one model's speed round")
    ap.add_argument("--variants", nargs="*", help="only these NNCF variants (default: all)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--setups", nargs="*", default=[f"{r}x{t}" for r, t in SETUPS],
                    help="RUNSxTHREADS to time (default: 2x1 1x2)")
    args = ap.parse_args()
    setups = _parse_setups(ap, args.setups)
    unknown = sorted(set(args.variants or []) - {v.name for v in VARIANTS})
    if unknown:
        ap.error(f"--variants {' '.join(unknown)}: unknown; expected some of {', '.join(v.name for v in VARIANTS)}")
    if not args.skip_quantize and importlib.util.find_spec("nncf") is None:
        ap.error("quantizing needs nncf (Apache-2.0), which is not installed here: run this with the training "
                 "venv (PYTHONPATH=$PWD /work/venv-train/bin/python ...), pip install nncf, or pass --skip-quantize "
                 "to time the IRs already in --out")
    chosen = [v for v in VARIANTS if not args.variants or v.name in args.variants]
    if not args.skip_quantize:
        quantize_variants(args.out, calibration_tensors(args.calib_count, 1000), chosen)
    irs = [(v.name, args.out / f"{v.name}.xml") for v in chosen if (args.out / f"{v.name}.xml").is_file()]
    if len(irs) < len(chosen):
        print(f"note: {len(chosen) - len(irs)} of the variants have no IR in {args.out}; only the others are "
              "compared (run without --skip-quantize to make them)", file=sys.stderr)
    if not args.skip_accuracy:
        accuracy([("fp32 ov", FP32, "openvino"), ("fp32 ort", FP32, "onnxruntime"), ("qdq ov", QDQ, "openvino"),
                  ("qdq ort", QDQ, "onnxruntime")] + [(n, p, "openvino") for n, p in irs], args.val_count)
    if args.skip_speed:
        return 0
    with tempfile.TemporaryDirectory() as cache:
        speed([("qdq", QDQ)] + irs, setups, args.rounds, args.seconds, pathlib.Path(cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
