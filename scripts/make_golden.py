#!/usr/bin/env python3
"""Write the golden reference for the prefilter: ultralytics' own predictor on the
shipped ONNX detector, over a fixed set of synthetic images.

    pip install -e '.[train]'
    python scripts/make_golden.py            # writes tests/data/golden/

The images (JPEG) and ``predictions.json`` are committed, so the default test run
checks our letterbox + decode + NMS against ultralytics without installing it
(tests/prefilter/test_golden.py); with the ``train`` extra the same test also
runs ultralytics live.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(REPO / "runs" / "yolo-config"))

GOLDEN = REPO / "tests" / "data" / "golden"
# Thresholds of ultralytics' predictor defaults; the test uses the same ones.
CONF, IOU = 0.25, 0.7


def render_images(out: pathlib.Path, count: int, seed: int) -> list[pathlib.Path]:
    import cv2
    import numpy as np

    from agent.capture.synthetic import ConveyorScene, render_still

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scene = ConveyorScene(seed)
    paths = []
    for i in range(count):
        if i % 2 == 0:
            image, _ = render_still(rng)
        else:  # stream frames: parts cut by the frame edge
            for _ in range(17):
                image, _ = scene.next_frame()
        path = out / f"img{i:02d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(path)
    return paths


def ultralytics_predictions(model: pathlib.Path, images: list[pathlib.Path]) -> dict[str, list[dict[str, object]]]:
    from ultralytics import YOLO

    yolo = YOLO(str(model), task="detect")
    result: dict[str, list[dict[str, object]]] = {}
    for path in images:
        (r,) = yolo.predict(str(path), conf=CONF, iou=IOU, imgsz=320, device="cpu", verbose=False)
        result[path.name] = [
            {"class_id": int(c), "confidence": round(float(s), 5), "box": [round(float(v), 3) for v in b]}
            for b, s, c in zip(r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist(), strict=True)
        ]
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=pathlib.Path, default=REPO / "models" / "conveyor-yolov8n.onnx")
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    images = render_images(GOLDEN, args.count, args.seed)
    preds = ultralytics_predictions(args.model, images)
    import ultralytics

    doc = {"model": args.model.name, "ultralytics": ultralytics.__version__, "conf": CONF, "iou": IOU,
           "imgsz": 320, "predictions": preds}
    (GOLDEN / "predictions.json").write_text(json.dumps(doc, indent=1) + "\n")
    total = sum(len(v) for v in preds.values())
    print(f"wrote {len(images)} images and {total} reference detections to {GOLDEN}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
