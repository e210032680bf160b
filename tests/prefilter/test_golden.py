"""Our pre/post-processing against ultralytics' own predictor on the shipped model.

The reference is committed (scripts/make_golden.py wrote it); where the ``train``
extra is installed, the second test also runs ultralytics live on the same images.
"""

from __future__ import annotations

import json
import os
import pathlib

import cv2
import numpy as np
import pytest

from agent.config.models import DEFAULT_MODEL, ModelConfig
from agent.prefilter.detector import YoloDetector
from agent.prefilter.yolo_decode import iou_one_to_many

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / "data" / "golden"
MARGIN = 0.02  # detections this close to the conf threshold may fall either side (float rounding)


def load_golden() -> dict:  # type: ignore[type-arg]
    return json.loads((GOLDEN / "predictions.json").read_text())


def our_predictions(conf: float, iou: float) -> dict[str, list[dict[str, object]]]:
    # ultralytics runs a fixed-shape ONNX model square: so do we here
    det = YoloDetector.from_file(DEFAULT_MODEL, ModelConfig(min_score=conf, iou_threshold=iou, max_detections=300,
                                                            input_size="square"))
    out = {}
    for path in sorted(GOLDEN.glob("*.jpg")):
        image = cv2.imread(str(path))
        out[path.name] = [{"class_id": d.class_id, "confidence": d.confidence, "box": list(d.box)}
                          for d in det.infer(image).detections]
    return out


def assert_same_detections(ours: dict, ref: dict, conf: float) -> int:  # type: ignore[type-arg]
    """Every reference detection clear of the threshold has a twin of the same class with IoU >= 0.99,
    and we have no extra ones clear of the threshold. Returns the number matched."""
    matched = 0
    assert sorted(ours) == sorted(ref)
    for name in ref:
        for side_a, side_b, what in ((ref[name], ours[name], "missing in ours"),
                                     (ours[name], ref[name], "extra in ours")):
            for d in side_a:
                if d["confidence"] < conf + MARGIN:
                    continue
                same_class = [o for o in side_b if o["class_id"] == d["class_id"]]
                ious = iou_one_to_many(np.array(d["box"]), np.array([o["box"] for o in same_class]).reshape(-1, 4))
                assert same_class and ious.max() >= 0.99, f"{name}: {what}: {d}"
                if what == "missing in ours":
                    matched += 1
                    best = same_class[int(np.argmax(ious))]
                    assert abs(best["confidence"] - d["confidence"]) < 1e-3, f"{name}: {d} vs {best}"
    return matched


def test_matches_committed_ultralytics_reference():
    golden = load_golden()
    assert golden["model"] == DEFAULT_MODEL.name
    ours = our_predictions(golden["conf"], golden["iou"])
    matched = assert_same_detections(ours, golden["predictions"], golden["conf"])
    assert matched >= 10, "the golden set should exercise a fair number of detections"


@pytest.mark.train
def test_matches_ultralytics_live():
    ultralytics = pytest.importorskip("ultralytics", reason="needs the train extra (pip install -e '.[train]')")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import importlib.util

    script = GOLDEN.parent.parent.parent / "scripts" / "make_golden.py"
    spec = importlib.util.spec_from_file_location("make_golden", script)
    assert spec is not None and spec.loader is not None and ultralytics.__version__
    make_golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_golden)
    ref = make_golden.ultralytics_predictions(DEFAULT_MODEL, sorted(GOLDEN.glob("*.jpg")))
    assert assert_same_detections(our_predictions(make_golden.CONF, make_golden.IOU), ref, make_golden.CONF) >= 10
