#!/usr/bin/env python3
"""What PyAV and ``camera.skip_deblocking`` change in the detector's output, and what they save the decoder, in
one run.

    python scripts/bench_deblocking.py [--frames 300] [--size 1280x960] [--model models/conveyor-yolov8n.int8.onnx]

Every frame of the H.264 bench video (scripts/bench_pipeline_video.py: the conveyor at --size, as an IP camera's
main stream) is decoded three ways: OpenCV; PyAV; PyAV without H.264's deblocking filter (``skip_deblocking``:
FFmpeg's skip_loop_filter=all). Each frame goes through the detector (the shipped INT8 one by default) and the
default triage band. Printed: the CPU a frame's read takes (decode and conversion; the process's CPU time over
--rounds passes of each decoder alone, the median) side by side with the ratios; the pictures' mean and largest
pixel difference; box agreement (same class and IoU >= 0.5, matched one to one) and verdict agreement of PyAV
against OpenCV and of PyAV without deblocking against PyAV with it, with the frames whose verdicts differ.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from bench_pipeline_video import write_video  # noqa: E402

from agent.capture.sources import FrameSource, OpenCVSource  # noqa: E402
from agent.config.models import ModelConfig, TriageConfig  # noqa: E402
from agent.tooling.evaluation.agreement import box_agreement  # noqa: E402
from agent.triage.policy import decide  # noqa: E402

MATCH_IOU = 0.5


class Side:
    """One way of decoding the video: its source, the CPU its reads took, and per frame the boxes and verdict."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.boxes: dict[str, list[list[float]]] = {}
        self.verdicts: list[str] = []

    def time_reads(self) -> float:
        """CPU ms per frame of reading the whole video alone (the process's CPU time: OpenCV's FFmpeg decodes on
        threads of its own; nothing else runs meanwhile)."""
        self.source.open()
        frames = 0
        t0 = time.process_time()
        while self.source.read() is not None:
            frames += 1
        spent = time.process_time() - t0
        self.source.close()
        return spent * 1000.0 / max(1, frames)

    def read(self) -> np.ndarray | None:
        frame = self.source.read()
        if frame is not None and frame.image is None:
            raise SystemExit(f"{self.source.describe()}: frame {len(self.verdicts)} did not decode")
        return None if frame is None else frame.image

    def detect(self, model: Any, image: np.ndarray) -> None:
        result = model.infer(image)
        self.boxes[str(len(self.verdicts))] = [[*d.box, d.class_id, d.confidence] for d in result.detections
                                                if d.box is not None]
        self.verdicts.append(decide(result, TriageConfig()).verdict)


def compare(title: str, a: Side, b: Side, diffs: list[tuple[float, int]]) -> None:
    agree = box_agreement(a.boxes, b.boxes, MATCH_IOU)
    differ = [(i, va, vb) for i, (va, vb) in enumerate(zip(a.verdicts, b.verdicts, strict=True)) if va != vb]
    print(f"\n{title}:")
    print(f"  pixels: mean |difference| {np.mean([d[0] for d in diffs]):.3f}, largest {max(d[1] for d in diffs)}")
    print(f"  boxes: matched {agree['matched']}, only the first {agree['only_a']}, only the second {agree['only_b']}; "
          f"IoU mean {agree['mean_iou']:.4f} min {agree['min_iou']:.4f}; |confidence difference| mean "
          f"{agree['mean_conf_diff']:.4f} max {agree['max_conf_diff']:.4f}")
    print(f"  verdicts: {len(a.verdicts) - len(differ)} of {len(a.verdicts)} agree"
          + ("" if not differ else "; differ: " + ", ".join(f"frame {i} {va}/{vb}" for i, va, vb in differ[:10])))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300, help="frames of the bench video (15 fps)")
    ap.add_argument("--size", default="1280x960", help="the video's frame size WxH")
    ap.add_argument("--model", type=pathlib.Path, default=ModelConfig().path)
    ap.add_argument("--rounds", type=int, default=2, help="timed passes of each decoder alone (median)")
    ap.add_argument("--video", type=pathlib.Path, default=None, help="an H.264 file instead of the bench video")
    args = ap.parse_args()
    try:
        import av  # noqa: F401  the video extra
    except ImportError:
        print("needs PyAV: pip install 'edge-agent[video]'", file=sys.stderr)
        return 2
    from agent.capture.pyav_source import PyAVSource
    from agent.prefilter.factory import open_prefilter

    w, h = (int(v) for v in args.size.lower().split("x"))
    model = open_prefilter(args.model, ModelConfig(path=args.model, max_batch=1, concurrent_runs=1))
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-deblocking-") as tmp:
        video = args.video or write_video(pathlib.Path(tmp) / "camera", args.frames, (w, h), "h264")
        print(f"{video.name if args.video else f'{w}x{h} H.264 bench video'}, model {args.model.name}, "
              "the decoders in step, one frame each at a time", flush=True)
        sides = {
            "opencv": Side(OpenCVSource(str(video))),
            "pyav": Side(PyAVSource(str(video))),
            "pyav, deblocking skipped": Side(PyAVSource(str(video), skip_deblocking=True)),
        }
        pairs = (("pyav", "opencv"), ("pyav, deblocking skipped", "pyav"))
        diffs: dict[tuple[str, str], list[tuple[float, int]]] = {pair: [] for pair in pairs}
        names = list(sides)
        timed: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds):  # the CPU of reads alone, in alternating order
            for name in names if r % 2 == 0 else names[::-1]:
                timed[name].append(sides[name].time_reads())
        for side in sides.values():
            side.source.open()
        while True:  # in step, one frame of each at a time: nothing but one frame each is kept
            read = {name: side.read() for name, side in sides.items()}
            images = {name: image for name, image in read.items() if image is not None}
            if len(images) < len(sides):
                break
            for name, image in images.items():
                sides[name].detect(model, image)
            for first, second in pairs:
                d = cv2.absdiff(images[first], images[second])
                diffs[(first, second)].append((float(d.mean()), int(d.max())))
        for side in sides.values():
            side.source.close()
    cost = {name: float(np.median(timed[name])) for name in sides}
    for name, side in sides.items():
        print(f"  {name:<26} {len(side.verdicts)} frames, read (decode, convert) {cost[name]:.2f} ms CPU a frame, "
              f"{sum(map(len, side.boxes.values()))} boxes, {side.verdicts.count('defect')} defect / "
              f"{side.verdicts.count('uncertain')} uncertain verdicts")
    print("  CPU against pyav: " + ", ".join(f"{n} {cost[n] / cost['pyav']:.2f}x" for n in sides))
    for first, second in pairs:
        compare(f"{first} (first) against {second} (second)", sides[first], sides[second], diffs[(first, second)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
