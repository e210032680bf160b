"""The classify folder dataset reader, evaluate_classifier with a fake classifier (hand-worked numbers),
the triage summary, and the HTML/PNG report."""

from __future__ import annotations

import datetime
import json
import pathlib
import re

import cv2
import numpy as np
import pytest

from agent.config.models import TriageConfig
from agent.core.detections import PrefilterResult
from agent.errors import DatasetError
from agent.tooling.evaluation.classify_dataset import (
    evaluate_classifier,
    read_classify_dataset,
    triage_summary,
)
from agent.tooling.evaluation.classify_report import ClassifyEvalContext, render_class_bars, write_classification_report

NAMES = ("pass", "scratch", "hole")


def make_dataset(root: pathlib.Path, files: dict[str, list[str]], split: str = "val") -> pathlib.Path:
    """``files``: class folder -> image stems; each image is 64x48 with its stem's number as grey level."""
    for folder, stems in files.items():
        (root / split / folder).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            cv2.imwrite(str(root / split / folder / f"{stem}.png"), np.full((48, 64, 3), int(stem), np.uint8))
    return root


def test_reader_matches_folders_to_the_model_names(tmp_path):
    root = make_dataset(tmp_path / "d", {"hole": ["3"], "pass": ["2", "1"]})
    (root / "val" / "pass" / "notes.txt").write_text("ignored")
    ds = read_classify_dataset(root, "val", names=NAMES)
    # ids are the model's: pass 0, hole 2; sorted by class id then file name; scratch has no folder
    assert [(im.class_id, im.path.name) for im in ds.images] == [(0, "1.png"), (0, "2.png"), (2, "3.png")]
    assert ds.names == NAMES and ds.counts() == {"pass": 2, "scratch": 0, "hole": 1}


def test_reader_without_model_names(tmp_path):
    root = make_dataset(tmp_path / "d", {"b": ["1"], "a": ["2"]})
    assert read_classify_dataset(root).names == ("a", "b")  # sorted folders, as ultralytics
    (root / "dataset.json").write_text(json.dumps({"names": ["b", "a", "c"]}))
    assert read_classify_dataset(root).names == ("b", "a", "c")  # edge-agent's own class order


@pytest.mark.parametrize(
    ("setup", "split", "message"),
    [
        # nothing there
        (lambda r: None, "val", "does not exist; expected a classify dataset folder with val/<class>/*.jpg"),
        # a YOLO detection dataset
        (lambda r: (r / "images" / "val").mkdir(parents=True), "val", "is a YOLO detection dataset"),
        # wrong split
        (lambda r: make_dataset(r, {"pass": ["1"]}, "train"), "val",
         "no 'val' split; it has train (choose with --split)"),
        # images not in class folders
        (lambda r: make_dataset(r, {".": ["1"]}), "val", "images directly in val/ (1.png); expected one sub-folder"),
        # a class the model does not know
        (lambda r: make_dataset(r, {"dent": ["1"]}), "val",
         "class folder(s) dent in val/ are not classes of the model"),
        # class folders without images
        (lambda r: (r / "val" / "pass").mkdir(parents=True), "val", "no images in split 'val'"),
    ],
)
def test_reader_errors(tmp_path, setup, split, message):
    root = tmp_path / "d"
    if "does not exist" not in message:
        root.mkdir()
    setup(root)
    with pytest.raises(DatasetError, match=re.escape(message)):
        read_classify_dataset(root, split, names=NAMES)


class FakeClassifier:
    """Predicts from the grey level of the image: 1 -> pass, 2 -> scratch, 3 -> scratch (wrong), 4 -> hole."""

    TABLE = {1: (0.9, 0.05, 0.05), 2: (0.3, 0.5, 0.2), 3: (0.1, 0.8, 0.1), 4: (0.0, 0.1, 0.9)}

    def __init__(self, names: tuple[str, ...] = NAMES) -> None:
        self.names = names

    def infer(self, image: np.ndarray) -> PrefilterResult:
        p = self.TABLE[int(image[0, 0, 0])]
        return PrefilterResult("fake@0", (), 2.0, task="classify", probabilities=tuple(zip(self.names, p, strict=True)))


def test_evaluate_classifier_on_hand_worked_numbers(tmp_path):
    # truth: pass {1, 2}, scratch {3}, hole {4} -> predicted pass, scratch, scratch, hole
    root = make_dataset(tmp_path / "d", {"pass": ["1", "2"], "scratch": ["3"], "hole": ["4"]})
    ds = read_classify_dataset(root, names=NAMES)
    progress: list[tuple[int, int]] = []
    seen: list[tuple[str, PrefilterResult]] = []
    m = evaluate_classifier(FakeClassifier(), ds, lambda d, t: progress.append((d, t)),
                            on_result=lambda item, r: seen.append((ds.names[item.class_id], r)))
    assert progress[-1] == (4, 4) and len(seen) == 4
    assert m.accuracy == pytest.approx(0.75)
    assert m.confusion_matrix == ((1, 1, 0), (0, 1, 0), (0, 0, 1))
    scratch = m.classes[1]
    assert (scratch.precision, scratch.recall) == (pytest.approx(0.5), pytest.approx(1.0))
    assert scratch.f1 == pytest.approx(2 / 3)
    # triage at accept 0.6, margin 0.2: 1 -> pass (right), 2 -> uncertain (0.5), 3 -> scratch (right), 4 -> hole
    t = triage_summary(seen, TriageConfig())
    assert (t.decided, t.decided_correct, t.defects_passed, t.uncertain) == (3, 3, 0, 1)
    assert t.coverage == pytest.approx(0.75) and t.decided_accuracy == 1.0


def test_triage_summary_counts_defects_passed():
    result = PrefilterResult("m@0", (), 1.0, task="classify", probabilities=(("pass", 0.95), ("hole", 0.05)))
    t = triage_summary([("hole", result), ("pass", result)], TriageConfig())
    assert (t.decided, t.decided_correct, t.defects_passed) == (2, 1, 1)


def test_evaluate_classifier_refuses_a_model_with_other_classes(tmp_path):
    ds = read_classify_dataset(make_dataset(tmp_path / "d", {"pass": ["1"]}), names=NAMES)
    with pytest.raises(DatasetError, match="names its classes ok, scratch, hole; the dataset's are pass"):
        evaluate_classifier(FakeClassifier(("ok", "scratch", "hole")), ds)


def test_report_files(tmp_path):
    root = make_dataset(tmp_path / "d", {"pass": ["1", "2"], "scratch": ["3"], "hole": ["4"]})
    ds = read_classify_dataset(root, names=NAMES)
    seen: list[tuple[str, PrefilterResult]] = []
    m = evaluate_classifier(FakeClassifier(), ds, on_result=lambda item, r: seen.append((ds.names[item.class_id], r)))
    now = datetime.datetime.now(datetime.timezone.utc)
    ctx = ClassifyEvalContext(model_id="fake@0", model_path=tmp_path / "fake.onnx", dataset=root, split="val",
                              started=now, finished=now, input_size=(256, 192),
                              preprocessing={"resize": "stretch"}, triage=triage_summary(seen, TriageConfig()),
                              latency_p50_ms=2.0)
    files = write_classification_report(tmp_path / "out", m, ctx)
    for png in (files.confusion_matrix, files.per_class):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = files.html.read_text()
    assert html.count("data:image/png;base64,") == 2 and "Classifier evaluation" in html and "75.0%" in html
    doc = json.loads(files.json.read_text())
    assert doc["schema"] == "edge-agent/eval-classification/1" and doc["metrics"]["accuracy"] == 0.75
    assert doc["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert doc["triage"]["decided"] == 3 and doc["dataset"]["per_class"] == {"pass": 2, "scratch": 1, "hole": 1}
    bars = render_class_bars(m)
    assert bars.ndim == 3 and bars.shape[2] == 3
