#!/usr/bin/env python3
"""``model.precision: bf16`` against f32 on OpenVINO: what BF16 float layers change in the detector's output, and
what they buy, in one run.

    python scripts/bench_precision.py [--frames 200] [--size 1280x960] [--models models/conveyor-yolov8n.onnx ...]
                                      [--rounds 3] [--seconds 3]

Every model (default: the shipped FP32 detector and its INT8 Q/DQ file) is opened twice on OpenVINO, with
``model.precision`` auto (float layers in f32) and bf16, one run at a time on every core (``concurrent_runs`` 1).
Both go over the 20 golden frames (tests/data/golden) and every frame of the bench video (the conveyor at
--size, scripts/bench_pipeline_video.py, decoded once): box agreement (same class and IoU >= 0.5, matched one to
one) and verdict agreement (the default triage band) of bf16 against f32, with the frames whose verdicts differ.
Then the model's speed: a loop of the letterboxed video frames through each side's model, --rounds rounds of
--seconds each in alternating order; frames per second side by side and the bf16 / f32 ratio per round. Last,
the INT8 accuracy gate's measures (``evaluate_model``: mAP50 and verdict changes) of bf16 against f32 on the
synthetic held-out split the shipped gate records used (``--val`` images, training seed 7).
On a CPU without BF16 the bf16 side runs f32 (the agent says so once) and the script says so.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any, Literal

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from bench_pipeline_video import write_video  # noqa: E402

from agent.config.models import DEFAULT_MODEL, DEFAULT_PREFILTER, ModelConfig, TriageConfig  # noqa: E402
from agent.tooling.evaluation.agreement import box_agreement  # noqa: E402
from agent.triage.policy import decide  # noqa: E402

MATCH_IOU = 0.5
GOLDEN = REPO / "tests" / "data" / "golden"
PRECISIONS: tuple[Literal["auto"], Literal["bf16"]] = ("auto", "bf16")


def outputs(model: Any, images: list[np.ndarray]) -> tuple[dict[str, list[list[float]]], list[str]]:
    """Per frame the boxes (x1, y1, x2, y2, class, confidence) and the default band's verdict."""
    boxes: dict[str, list[list[float]]] = {}
    verdicts: list[str] = []
    for i, image in enumerate(images):
        result = model.infer(image)
        boxes[str(i)] = [[*d.box, d.class_id, d.confidence] for d in result.detections if d.box is not None]
        verdicts.append(decide(result, TriageConfig()).verdict)
    return boxes, verdicts


def agreement(title: str, f32: Any, bf16: Any, images: list[np.ndarray]) -> None:
    (boxes_a, verdicts_a), (boxes_b, verdicts_b) = outputs(f32, images), outputs(bf16, images)
    agree = box_agreement(boxes_a, boxes_b, MATCH_IOU)
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(verdicts_a, verdicts_b, strict=True)) if a != b]
    print(f"  {title}: boxes matched {agree['matched']}, only f32 {agree['only_a']}, only bf16 {agree['only_b']}; "
          f"IoU mean {agree['mean_iou']:.4f} min {agree['min_iou']:.4f}; |confidence difference| mean "
          f"{agree['mean_conf_diff']:.4f} max {agree['max_conf_diff']:.4f}; verdicts {len(images) - len(differ)} "
          f"of {len(images)} agree" + ("" if not differ else " (differ: " + ", ".join(
              f"frame {i} {a}/{b}" for i, a, b in differ[:10]) + ")"), flush=True)


def rate(model: Any, tensors: list[np.ndarray], seconds: float) -> float:
    """Frames per second of ``model.forward`` over ``tensors`` (round and round) for about ``seconds``."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.forward(tensors[done % len(tensors)])
        done += 1
    return done / (time.perf_counter() - start)


def speed(models: Mapping[str, Any], video_frames: list[np.ndarray], rounds: int, seconds: float) -> None:
    tensors = []
    for image in video_frames[:50]:
        tensor, _plans = models["auto"].prepare([image], models["auto"].new_input())
        tensors.append(tensor.copy())
    for model in models.values():
        rate(model, tensors, 0.3)  # warm-up: the first runs of a compiled model are slower
    fps: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for r in range(rounds):
        for precision in PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]:
            fps[precision].append(rate(models[precision], tensors, seconds))
    ratios = [b / a for a, b in zip(fps["auto"], fps["bf16"], strict=True)]
    print(f"  model frames/s, one run on every core: f32 median {np.median(fps['auto']):.1f} "
          f"(rounds {' '.join(f'{v:.1f}' for v in fps['auto'])}), bf16 median {np.median(fps['bf16']):.1f} "
          f"(rounds {' '.join(f'{v:.1f}' for v in fps['bf16'])}); bf16 / f32 {np.median(ratios):.2f}x "
          f"(rounds {' '.join(f'{v:.2f}' for v in ratios)})", flush=True)


def gate(path: pathlib.Path, dataset: Any, threads: int) -> None:
    """The INT8 accuracy gate's measures of bf16 against f32 (agent/tooling/quantize/workflow.py)."""
    from agent.tooling.quantize.workflow import evaluate_model

    band = TriageConfig()
    f32, bf16 = (evaluate_model(path, dataset, band, threads, f"{path.name} {p}", runtime="openvino", precision=p)
                 for p in PRECISIONS)
    changed = sum(a != b for a, b in zip(f32.verdicts, bf16.verdicts, strict=True))
    print(f"  gate measures on the synthetic held-out split ({len(f32.verdicts)} images): {f32.metric} f32 "
          f"{f32.value:.4f}, bf16 {bf16.value:.4f} (drop {100 * (f32.value - bf16.value):.2f} points; the gate "
          f"allows 1.0); verdicts changed {changed} ({100 * changed / max(1, len(f32.verdicts)):.1f}%; the gate "
          "allows 2.0%)", flush=True)


def validation_set(root: pathlib.Path, count: int, names: Any) -> Any:
    """The synthetic held-out split `edge-agent models quantize --val synthetic` gates on (training seed 7)."""
    from agent.tooling.dataset.synth import write_synthetic_dataset
    from agent.tooling.evaluation.dataset import read_yolo_dataset

    write_synthetic_dataset(root, 1, count, seed=7)
    return read_yolo_dataset(root, "val", names=names)


def read_video(path: pathlib.Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200, help="frames of the bench video")
    ap.add_argument("--size", default="1280x960", help="the video's frame size WxH")
    ap.add_argument("--models", nargs="+", type=pathlib.Path, default=[DEFAULT_MODEL, DEFAULT_PREFILTER])
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of each precision, alternating")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of one timed round")
    ap.add_argument("--val", type=int, default=150, help="images of the synthetic held-out split the INT8 gate "
                    "uses, for its mAP50 and verdict change of bf16 against f32 (0: skip)")
    args = ap.parse_args()
    from agent.errors import EdgeAgentError
    from agent.prefilter.factory import open_prefilter
    from agent.prefilter.openvino_session import cpu_capabilities, load_openvino

    try:
        capabilities = cpu_capabilities(load_openvino())
    except EdgeAgentError as exc:
        print(exc, file=sys.stderr)
        return 2
    w, h = (int(v) for v in args.size.lower().split("x"))
    golden: list[np.ndarray] = [np.asarray(cv2.imread(str(p))) for p in sorted(GOLDEN.glob("*.jpg"))]
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-precision-") as tmp:
        video = read_video(write_video(pathlib.Path(tmp) / "camera", args.frames, (w, h)))
        print(f"OpenVINO CPU capabilities: {', '.join(capabilities)}; {len(golden)} golden frames, {len(video)} "
              f"frames of the {w}x{h} bench video; bf16 against f32 (model.precision auto)", flush=True)
        dataset: Any = None
        for path in args.models:
            cache = pathlib.Path(tmp) / "engines"
            models: dict[str, Any] = {
                p: open_prefilter(path, ModelConfig(path=path, runtime="openvino", precision=p, concurrent_runs=1,
                                                    max_batch=1, engine_cache_dir=cache)) for p in PRECISIONS}
            ran = {p: m.session.get_providers()[0] for p, m in models.items()}
            print(f"{path.name}: f32 side {ran['auto']}, bf16 side {ran['bf16']}", flush=True)
            agreement("golden frames", models["auto"], models["bf16"], golden)
            agreement(f"{w}x{h} video", models["auto"], models["bf16"], video)
            speed(models, video, args.rounds, args.seconds)
            if args.val > 0:
                if dataset is None:
                    dataset = validation_set(pathlib.Path(tmp) / "val", args.val, models["auto"].info.names)
                gate(path, dataset, os.cpu_count() or 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
