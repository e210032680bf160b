"""What keeping audit images costs per frame, side by side in one run, on synthetic conveyor frames.

    python scripts/bench_images.py [--sizes 640x480,1280x720] [--frames 60] [--rounds 5] [--store 20000]

Per frame size, the medians per frame of:

* ``snapshot``: rendering the snapshot alone (annotated, scaled to 640 wide, quality 80: the defaults) - what
  the publishing thread already pays with ``snapshots:`` on;
* ``image``: encoding the full-resolution frame for the audit images (quality 90, the default) - what the
  ``images-writer`` thread pays with ``reuse_snapshot: false``;
* ``store``: adding one encoded image to a real images folder (file + index row + size eviction, bound reached);
* and the ratios: both on with ``reuse_snapshot: false`` (snapshot + image) against ``reuse_snapshot: true``
  (the snapshot only: the frame is encoded once), and the image's encode against the snapshot's.

The frames are rendered once before timing; each round times every side over the same frames, alternating.
``--store N`` also times a folder of N images: reopening it (the repair walk) and an age sweep of N/4.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.capture.synthetic import ConveyorScene, SceneSettings  # noqa: E402
from agent.config.models import TriageConfig  # noqa: E402
from agent.core.detections import Detection, PrefilterResult  # noqa: E402
from agent.outputs.images.store import ImageRow, ImageStore, image_path  # noqa: E402
from agent.publish.snapshot import render_snapshot  # noqa: E402
from agent.triage.policy import decide  # noqa: E402


def frames_of(width: int, height: int, n: int) -> list[np.ndarray]:
    scene = ConveyorScene(seed=7, settings=SceneSettings(width=width, height=height))
    return [scene.next_frame()[0] for _ in range(n)]


def per_frame_ms(frames: list[np.ndarray], work: Callable[[int, np.ndarray], object]) -> float:
    t0 = time.perf_counter()
    for i, frame in enumerate(frames):
        work(i, frame)
    return (time.perf_counter() - t0) * 1000.0 / len(frames)


def bench_size(width: int, height: int, n: int, rounds: int) -> None:
    frames = frames_of(width, height, n)
    box = (width * 0.3, height * 0.3, width * 0.5, height * 0.5)
    decision = decide(PrefilterResult("m", (Detection("scratch", 0, 0.9, box),), 1.0), TriageConfig())
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]
    bound = sum(len(j) for j in jpegs) // 2  # half the frames fit: every add after the first half evicts
    with tempfile.TemporaryDirectory() as tmp:
        store = ImageStore.open(pathlib.Path(tmp))
        counter = iter(range(10**9))

        def snapshot(_i: int, f: np.ndarray) -> object:
            return render_snapshot(f, decision, max_width=640, quality=80, max_bytes=200_000)

        def image(_i: int, f: np.ndarray) -> object:
            return cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])

        def add(i: int, _f: np.ndarray) -> object:
            k = next(counter)
            at = datetime.datetime.fromtimestamp(1.7e9 + k, datetime.timezone.utc)
            row = ImageRow(f"e{k}", "cam1", at.timestamp(), "defect", image_path("cam1", f"e{k}", at), 0, 1, None)
            return store.add(row, jpegs[i], bound)

        sides: dict[str, list[float]] = {"snapshot": [], "image": [], "store": []}
        for _ in range(rounds):
            for name, work in (("snapshot", snapshot), ("image", image), ("store", add)):
                sides[name].append(per_frame_ms(frames, work))
        store.close()
    snap, img, put = (statistics.median(sides[k]) for k in ("snapshot", "image", "store"))
    print(f"{width}x{height}: snapshot {snap:.2f} ms, full-resolution image encode {img:.2f} ms, store add "
          f"{put:.2f} ms per frame (JPEG {statistics.median(len(j) for j in jpegs) / 1024:.0f} KiB)")
    print(f"  both on, reuse_snapshot false / true: {snap + img:.2f} / {snap:.2f} ms = {(snap + img) / snap:.2f}x; "
          f"image encode / snapshot = {img / snap:.2f}x; writer per image (encode + store) {img + put:.2f} ms = "
          f"{1000.0 / (img + put):.0f} images/s on one core")


def bench_store(n: int) -> None:
    """A folder of ``n`` images (two cameras, one every 30 s, 100-byte files): reopening it (the repair walk at
    start) and the age sweep of a quarter of them (one camera's older half), what a restart and a lowered
    max_days cost the writer thread."""
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        store = ImageStore.open(root)
        t0 = time.perf_counter()
        for k in range(n):
            cam = f"cam{k % 2}"
            at = datetime.datetime.fromtimestamp(1.7e9 + k * 30, datetime.timezone.utc)
            store.add(ImageRow(f"e{k}", cam, at.timestamp(), "defect", image_path(cam, f"e{k}", at), 0, 1, None),
                      b"x" * 100, 10**12)
        added = (time.perf_counter() - t0) * 1000.0 / n
        store.close()
        t0 = time.perf_counter()
        store = ImageStore.open(root)
        reopened = (time.perf_counter() - t0) * 1000.0
        t0 = time.perf_counter()
        swept = store.evict_older(1.7e9 + n // 2 * 30, "cam0")
        sweep = (time.perf_counter() - t0) * 1000.0
        store.close()
    print(f"store of {n} images: add {added:.2f} ms each; reopen (repair walk) {reopened:.0f} ms; age sweep of "
          f"{swept} images {sweep:.0f} ms ({sweep / max(1, swept) * 1000:.0f} us each)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="640x480,1280x720")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--store", type=int, default=0, help="also time a folder of this many images (0: not)")
    args = ap.parse_args()
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        bench_size(w, h, args.frames, args.rounds)
    if args.store:
        bench_store(args.store)


if __name__ == "__main__":
    main()
