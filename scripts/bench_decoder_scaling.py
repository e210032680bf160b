#!/usr/bin/env python3
"""What ``camera.decoder_scaling`` changes in the detector's output, and what it saves, in one run.

    python scripts/bench_decoder_scaling.py [--frames 300] [--scalings none area bilinear point]
                                           [--model models/conveyor-yolov8n.int8.onnx] [--video FILE ...]
    python scripts/bench_decoder_scaling.py --scalings none none+skip area+skip planes+skip --only 0 1
                                           # with camera.skip_deblocking too (the settings 12 cameras need here)

Videos (written by this script with PyAV's encoders, the conveyor scene with its ground truth; plus any
``--video``, unlabelled): 1280x960 H.264 (yuv420p, the 640x480 scene scaled 2x, as the bench video), 1920x1080
H.264 (the 960x540 scene scaled 2x), 1280x960 MPEG-4 Part 2 and 1280x960 MJPEG (yuvj420p, full range), the
latter two with the belt's decoy edge marks. Each video is read once per scaling by the PyAV source; every
frame goes through the detector as the agent hands it over (the frame's picture: ``none`` resizes its
full-size BGR image with OpenCV, as every release so far; the others scale the decoder's YUV picture straight
to the letterbox's window with swscale) and the default triage band.

Printed per video and scaling, against ``none``: box agreement (same class, IoU >= 0.5, matched one to one),
verdicts that differ (and which), mAP50 against the scene's truth (labelled videos), and the CPU from the
decoded frame to the model's input tensor (the picture's conversions and the letterbox; the process's CPU
time, summed over the frames, the scalings read in turn frame by frame, each frame's preparations before any of
its model runs, so the box's load falls on all alike; ``scripts/bench_swscale.py`` measures the same without a
model in the process), and on a line below the same with the frame's reading and decoding added (``lowres``,
MJPEG decoded small, saves there).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import tempfile
import time
import typing
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from agent.config.camera import DecoderScaling  # noqa: E402
from agent.config.models import ModelConfig, TriageConfig  # noqa: E402
from agent.core.frame import FrameTruth  # noqa: E402
from agent.tooling.evaluation.agreement import box_agreement  # noqa: E402
from agent.tooling.evaluation.detection import DetectionEvaluator  # noqa: E402
from agent.triage.policy import decide  # noqa: E402

MATCH_IOU = 0.5


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    name: str
    codec: str  # PyAV encoder
    pix_fmt: str
    size: tuple[int, int]  # the file's frame size
    scene: tuple[int, int]  # the scene's size, scaled up to ``size``
    edge_marks: bool = False


VIDEOS = (
    VideoSpec("conveyor 1280x960 H.264", "libx264", "yuv420p", (1280, 960), (640, 480)),
    VideoSpec("conveyor 1920x1080 H.264", "libx264", "yuv420p", (1920, 1080), (960, 540)),
    VideoSpec("conveyor+edge marks 1280x960 MPEG-4", "mpeg4", "yuv420p", (1280, 960), (640, 480), True),
    VideoSpec("conveyor+edge marks 1280x960 MJPEG", "mjpeg", "yuvj420p", (1280, 960), (640, 480), True),
)


def write(spec: VideoSpec, folder: pathlib.Path, frames: int) -> tuple[pathlib.Path, list[FrameTruth]]:
    """The video of ``spec`` (15 fps, about 0.2 bit a pixel) and each frame's truth in its pixels."""
    import av

    from agent.capture.synthetic import ConveyorScene, SceneSettings

    scene = ConveyorScene(seed=23, settings=SceneSettings(width=spec.scene[0], height=spec.scene[1],
                                                          edge_marks=spec.edge_marks))
    sx, sy = spec.size[0] / spec.scene[0], spec.size[1] / spec.scene[1]
    path = folder / f"{spec.codec}-{spec.size[0]}x{spec.size[1]}.{'avi' if spec.codec == 'mjpeg' else 'mp4'}"
    truths = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream(spec.codec, rate=15, options={"preset": "veryfast"} if spec.codec == "libx264" else {})
        stream.width, stream.height, stream.pix_fmt = spec.size[0], spec.size[1], spec.pix_fmt
        stream.bit_rate = int(spec.size[0] * spec.size[1] * 15 * (0.2 if spec.codec == "libx264" else 0.6))
        for _ in range(frames):
            image, truth = scene.next_frame()
            image = cv2.resize(image, spec.size, interpolation=cv2.INTER_LINEAR)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
            truths.append(FrameTruth(parts=(), defects=tuple(
                dataclasses.replace(d, box=(d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy))
                for d in truth.defects)))
        out.mux(stream.encode(None))
    return path, truths


class Side:
    """One scaling's pass over a video: per frame the boxes and verdict, and the CPU to the model's input."""

    def __init__(self, video: pathlib.Path, scaling: str, model: Any) -> None:
        from agent.capture.pyav_source import PyAVSource

        self.scaling = scaling
        base, _, extra = scaling.partition("+")  # "area+skip": that scaling with camera.skip_deblocking
        self.source = PyAVSource(str(video), model_scaling=None if base == "none" else base.upper(),
                                 skip_deblocking=extra == "skip")
        self.model = model
        self.buffer = model.new_input()
        self.boxes: dict[str, list[list[float]]] = {}
        self.detections: list[tuple[Any, ...]] = []
        self.verdicts: list[str] = []
        self.cpu_s = 0.0
        self.decode_s = 0.0  # reading and decoding the frame, before cpu_s

    def prepare(self) -> Any:
        """Read one frame (decoded, not converted) and letterbox it into the tensor (both timed); None at the
        end."""
        t0 = time.process_time()
        got = self.source.read()
        self.decode_s += time.process_time() - t0
        if got is None:
            return None
        if got.picture is None:
            raise SystemExit(f"{self.source.describe()}: frame {len(self.verdicts)} did not decode")
        t0 = time.process_time()
        prepared = self.model.prepare([got.picture], self.buffer)
        self.cpu_s += time.process_time() - t0
        return prepared

    def finish(self, prepared: Any) -> None:
        """The model and triage for a prepared frame."""
        tensor, plans = prepared
        result = self.model.finish(self.model.forward(tensor), plans, 0.0)[0]
        self.detections.append(result.detections)
        self.boxes[str(len(self.verdicts))] = [[*d.box, d.class_id, d.confidence] for d in result.detections
                                                if d.box is not None]
        self.verdicts.append(decide(result, TriageConfig()).verdict)


def map50(side: Side, truths: list[FrameTruth], names: tuple[str, ...]) -> float:
    ev = DetectionEvaluator(names)
    for truth, found in zip(truths, side.detections, strict=True):
        ev.add_image([names.index(d.label) for d in truth.defects], [list(d.box) for d in truth.defects]
                     or np.zeros((0, 4)), [d.class_id for d in found], [d.confidence for d in found],
                     [list(d.box) for d in found] or np.zeros((0, 4)))
    return ev.compute().map50


def run_video(name: str, video: pathlib.Path, truths: list[FrameTruth] | None, scalings: list[str],
              model: Any) -> None:
    sides = [Side(video, s, model) for s in scalings]
    for side in sides:
        side.source.open()
    frame = 0
    while True:  # in step: every side prepares its frame (in turn, a different one first each frame), then the
        # model runs for each (so that its threads' spinning after a run falls on no side's preparation)
        order = sides[frame % len(sides):] + sides[:frame % len(sides)]
        prepared = {side.scaling: side.prepare() for side in order}
        if any(p is None for p in prepared.values()):
            break
        for side in sides:
            side.finish(prepared[side.scaling])
        frame += 1
    for side in sides:
        side.source.close()
    base = sides[0]
    n = len(base.verdicts)
    print(f"\n{name} ({video.name}, {n} frames; {base.verdicts.count('defect')} defect, "
          f"{base.verdicts.count('uncertain')} uncertain verdicts with {base.scaling}):")
    print(f"  {'scaling':14s} {'CPU ms/frame':>12s} {'/ ' + base.scaling:>8s} {'boxes matched':>16s} "
          f"{'IoU mean':>8s} {'verdicts differ':>16s}" + (f" {'mAP50':>7s}" if truths else ""))
    for side in sides:
        agree = box_agreement(side.boxes, base.boxes, MATCH_IOU)
        differ = [i for i, (a, b) in enumerate(zip(side.verdicts, base.verdicts, strict=True)) if a != b]
        total = agree["matched"] + agree["only_a"] + agree["only_b"]
        print(f"  {side.scaling:14s} {side.cpu_s / n * 1000:12.3f} {side.cpu_s / base.cpu_s:7.2f}x "
              f"{agree['matched']:>7.0f} of {total:<6.0f} {agree['mean_iou']:8.4f} "
              f"{len(differ):>5d} ({len(differ) / n:5.1%})"
              + (f" {map50(side, truths, model.info.names):7.4f}" if truths else "")
              + ("" if not differ else "  frames " + ", ".join(map(str, differ[:8])) + (" ..." if len(differ) > 8
                                                                                        else "")))
    print("  decode + model input, CPU ms/frame: " + ", ".join(
        f"{side.scaling} {(side.decode_s + side.cpu_s) / n * 1000:.3f}" for side in sides))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300, help="frames of each written video (15 fps)")
    ap.add_argument("--scalings", nargs="+", default=["none", "area", "bilinear", "point", "fast_bilinear"],
                    help="none (OpenCV's resize of the BGR frame) first, then swscale interpolations, planes or "
                    "lowres (MJPEG decoded small); NAME+skip: with camera.skip_deblocking (H.264/HEVC without the "
                    "deblocking filter)")
    ap.add_argument("--model", type=pathlib.Path, default=ModelConfig().path)
    ap.add_argument("--video", type=pathlib.Path, nargs="*", default=[], help="more videos (unlabelled)")
    ap.add_argument("--only", nargs="*", type=int, default=None, help="of the written videos, these (0-3)")
    args = ap.parse_args()
    known = typing.get_args(DecoderScaling)
    for scaling in args.scalings:
        base, plus, extra = scaling.partition("+")
        if base not in known or (plus and extra != "skip"):
            print(f"--scalings: {scaling!r} is not a setting; expected one of {', '.join(known)}, each optionally "
                  "followed by +skip (camera.skip_deblocking)", file=sys.stderr)
            return 2
    try:
        import av  # noqa: F401  the video extra
    except ImportError:
        print("needs PyAV: pip install 'edge-agent[video]'", file=sys.stderr)
        return 2
    from agent.prefilter.factory import open_prefilter

    model = open_prefilter(args.model, ModelConfig(path=args.model, max_batch=1, concurrent_runs=1))
    print(f"model {args.model.name}, scalings {' '.join(args.scalings)} against {args.scalings[0]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-scaling-") as tmp:
        for i, spec in enumerate(VIDEOS):
            if args.only is None or i in args.only:
                video, truths = write(spec, pathlib.Path(tmp), args.frames)
                run_video(spec.name, video, truths, args.scalings, model)
        for video in args.video:
            run_video(video.name, video, None, args.scalings, model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
