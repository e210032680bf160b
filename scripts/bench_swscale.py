#!/usr/bin/env python3
"""The CPU a decoded frame's conversion takes, from the decoder's YUV picture to the model's input tensor, by
way, in one run.

    python scripts/bench_swscale.py [VIDEO ...] [--frames 300] [--size 1280x960] [--codec h264] [--input 320x256]

Every frame of each video (default: the H.264 bench video of scripts/bench_pipeline_video.py at --size) is
decoded once, on one thread; then each way below converts it, one after the other on the same frame, and the
process's CPU time each way takes is summed (ways alternate frame by frame, so the box's load falls on all
alike). Printed per video: CPU ms per frame of each way, its ratio to today's, and how far its tensor is from
today's (mean and largest difference, in grey levels):

* ``today``: ``frame.to_ndarray(format="bgr24")`` (a new swscale context every frame), then
  ``letterbox_to_tensor`` (cv2.resize INTER_LINEAR, a table into the tensor);
* ``persistent``: the same through one kept context (:class:`agent.capture.swscale.Swscale`);
* ``planes``: the Y, U and V planes resized to the letterbox window's size by OpenCV and converted small by
  swscale (:class:`agent.capture.yuv_scale.PlaneScaler`, ``camera.decoder_scaling: planes``), then the table;
* ``one pass <interpolation>``: swscale straight to the letterbox window's size (persistent context), then
  the same table into the tensor (``camera.decoder_scaling: area`` etc.).

The decode alone is printed too, for scale.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import numpy as np  # noqa: E402
from bench_pipeline_video import CODECS, write_video  # noqa: E402

from agent.capture.swscale import Swscale  # noqa: E402
from agent.capture.yuv_scale import PlaneScaler  # noqa: E402
from agent.prefilter.letterbox import Letterbox, letterbox_to_tensor, plan_letterbox  # noqa: E402

INTERPOLATIONS = ("BILINEAR", "AREA", "FAST_BILINEAR", "POINT", "BICUBIC")
SAMPLE_EVERY = 10  # tensors compared with today's: every 10th frame

Way = Callable[[Any, np.ndarray], None]


def ways(plan: Letterbox) -> dict[str, Way]:
    """Each way of turning a decoded frame into the tensor ``out`` (3, H, W) float32."""
    scratch = np.empty((plan.new_h, plan.new_w, 3), np.uint8)
    window = plan_letterbox(plan.new_w, plan.new_h, plan.dst_w, plan.dst_h)  # already the window's size
    kept = Swscale()
    found: dict[str, Way] = {
        "today": lambda f, out: letterbox_to_tensor(f.to_ndarray(format="bgr24"), plan, out, scratch),
        "persistent": lambda f, out: letterbox_to_tensor(kept.bgr(f), plan, out, scratch),
    }
    planes = PlaneScaler()
    found["planes"] = lambda f, out: _window(planes(f, plan.new_w, plan.new_h), window, out)
    for name in INTERPOLATIONS:
        sws = Swscale(name)
        found[f"one pass {name}"] = (lambda f, out, sws=sws:
                                     letterbox_to_tensor(sws.bgr(f, plan.new_w, plan.new_h), window, out, None))
    return found


def _window(image: np.ndarray | None, plan: Letterbox, out: np.ndarray) -> None:
    if image is None:
        raise SystemExit("this video's pixel format is not 4:2:0: the planes way declines it")
    letterbox_to_tensor(image, plan, out, None)


def measure(path: pathlib.Path, frames: int, size: tuple[int, int]) -> None:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = "NONE", 1
        plan = None
        spent: dict[str, float] = {}
        tensors: dict[str, list[np.ndarray]] = {}
        decode = 0.0
        n = 0
        packets = container.demux(stream)
        while n < frames:
            t0 = time.process_time()
            got = _next_frame(stream, packets)
            decode += time.process_time() - t0
            if got is None:
                break
            if plan is None:
                plan = plan_letterbox(got.width, got.height, size[0], size[1])
                todo = ways(plan)
                spent = dict.fromkeys(todo, 0.0)
                tensors = {k: [] for k in todo}
            for name, way in todo.items():
                out = np.empty((3, size[1], size[0]), np.float32)
                t0 = time.process_time()
                way(got, out)
                spent[name] += time.process_time() - t0
                if n % SAMPLE_EVERY == 0:
                    tensors[name].append(out)
            n += 1
    if plan is None:
        raise SystemExit(f"{path}: no frame decoded")
    print(f"\n{path.name}: {plan.src_w}x{plan.src_h} {stream.codec_context.name}, {n} frames, model input "
          f"{size[0]}x{size[1]} (window {plan.new_w}x{plan.new_h}); decode alone {decode / n * 1000:.2f} ms/frame")
    print(f"  {'way':24s} {'CPU ms/frame':>12s} {'/ today':>8s} {'mean diff':>10s} {'max diff':>9s}")
    for name in spent:
        diffs = [np.abs(a - b) * 255 for a, b in zip(tensors[name], tensors["today"], strict=True)]
        print(f"  {name:24s} {spent[name] / n * 1000:12.3f} {spent[name] / spent['today']:8.2f}x "
              f"{np.mean([d.mean() for d in diffs]):10.3f} {max(float(d.max()) for d in diffs):9.1f}")


def _next_frame(stream: Any, packets: Any) -> Any:
    for packet in packets:
        decoded = stream.codec_context.decode(packet)
        if decoded:
            return decoded[0]
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="*", type=pathlib.Path, help="video files (default: the bench video)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", default="1280x960", help="the bench video's frame size WxH")
    ap.add_argument("--codec", default="h264", choices=CODECS, help="the bench video's codec")
    ap.add_argument("--input", default="320x256", help="the model input WxH (the letterbox's target)")
    args = ap.parse_args()
    try:
        import av  # noqa: F401  the video extra
    except ImportError:
        print("needs PyAV: pip install 'edge-agent[video]'", file=sys.stderr)
        return 2
    w, h = (int(v) for v in args.input.split("x"))
    videos = list(args.videos)
    with tempfile.TemporaryDirectory() as tmp:
        if not videos:
            size = tuple(int(v) for v in args.size.split("x"))
            videos = [pathlib.Path(tmp) / f"bench.{'avi' if args.codec == 'mjpg' else 'mp4'}"]
            write_video(videos[0], args.frames, (size[0], size[1]), args.codec)
        for video in videos:
            measure(video, args.frames, (w, h))
    return 0


if __name__ == "__main__":
    sys.exit(main())
