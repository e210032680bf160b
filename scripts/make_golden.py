#!/usr/bin/env python3
"""Write the golden reference for the prefilter: ultralytics' own predictor on the
shipped ONNX detector, over a fixed set of synthetic images.

    pip install -e '.[train]'
    python scripts/make_golden.py            # writes tests/data/golden/

The images (JPEG) and ``predictions.json`` are committed, so the default test run
checks our letterbox + decode + NMS against ultralytics without installing it
(tests/prefilter/test_golden.py); with the ``train`` extra the same test also
runs ultralytics live.

    python scripts/make_golden.py --rect     # writes tests/data/golden/predictions_rect.json

``--rect``: ultralytics' predictor with its "rect" letterbox (padding only to a multiple of 32, what
it does for PyTorch weights) on the committed images and on their 640x360 (16:9) crops, with the
weights rebuilt from the ONNX file (agent/tooling/training/onnx_to_yolo.py): the reference for
``model.input_size: auto`` (tests/prefilter/test_input_size.py).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any

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


def crop_16_9(image: Any) -> Any:
    """The 640x360 middle of a 640x480 golden image (a 16:9 frame: 192x320 under input_size auto)."""
    return image[60:420].copy()


def rect_predictions(model: pathlib.Path, images: list[pathlib.Path]) -> dict[str, list[dict[str, object]]]:
    """ultralytics' rect predictor on each image and its 16:9 crop (key ``<name>@640x360``)."""
    import tempfile

    import cv2
    from ultralytics import YOLO

    from agent.capture.synthetic import ConveyorScene
    from agent.prefilter.factory import open_prefilter
    from agent.tooling.training.onnx_to_yolo import yolo_from_onnx

    det = open_prefilter(model)
    scene = ConveyorScene(seed=11)
    calib = [det.preprocess(scene.next_frame()[0])[0].copy() for _ in range(8)]
    checkpoint, _info = yolo_from_onnx(model, len(det.info.names), pathlib.Path(tempfile.mkdtemp()), calib,
                                       tolerance=1e-3)
    yolo = YOLO(str(checkpoint), task="detect")
    result: dict[str, list[dict[str, object]]] = {}
    for path in images:
        image = cv2.imread(str(path))
        for key, frame in ((path.name, image), (f"{path.name}@640x360", crop_16_9(image))):
            (r,) = yolo.predict(frame, conf=CONF, iou=IOU, imgsz=320, device="cpu", verbose=False)
            result[key] = [
                {"class_id": int(c), "confidence": round(float(s), 5), "box": [round(float(v), 3) for v in b]}
                for b, s, c in zip(r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist(), strict=True)
            ]
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=pathlib.Path, default=REPO / "models" / "conveyor-yolov8n.onnx")
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--rect", action="store_true", help="write predictions_rect.json from the committed images")
    args = ap.parse_args()
    if args.rect:
        import ultralytics

        images = sorted(GOLDEN.glob("*.jpg"))
        preds = rect_predictions(args.model, images)
        doc = {"model": args.model.name, "ultralytics": ultralytics.__version__, "conf": CONF, "iou": IOU,
               "imgsz": 320, "rect": True, "predictions": preds}
        (GOLDEN / "predictions_rect.json").write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {sum(len(v) for v in preds.values())} rect reference detections to {GOLDEN}")
        return 0
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
