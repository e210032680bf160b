"""The label rule (agent.tooling.dataset.labels), one row per case."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agent.core.detections import Detection
from agent.dataset.record import DatasetRecord
from agent.dataset.recorder import build_record
from agent.tooling.dataset.labels import label_frame
from tests.dataset.recording import MODEL, answered, det, inspection

A, B, C = (10, 10, 50, 40), (60, 20, 90, 60), (100, 70, 140, 110)


def escalated(detections: Sequence[Detection], verdict: str, classes: Sequence[str]) -> DatasetRecord:
    insp = inspection(detections)
    return build_record(insp, "escalated", answered(insp.event, verdict, classes), MODEL, "box1")


def boxes(record: DatasetRecord, **kw: float) -> list[tuple[str, tuple[float, ...], str]]:
    label = label_frame(record, **kw)  # type: ignore[arg-type]
    return [(MODEL.names[b.class_id], b.box, b.how) for b in label.boxes]


@pytest.mark.parametrize(("dets", "verdict", "classes", "action", "expected", "image_class", "disagrees"), [
    # the VLM confirms the prefilter's class: kept as it is
    ([det("scratch", 0.4, A)], "defect", ["scratch"], "boxes", [("scratch", A, "confirmed")], "scratch", False),
    # the VLM names another class and there is no detection of it: the best unconfirmed one is relabelled
    ([det("stain", 0.4, A), det("stain", 0.2, B)], "defect", ["hole"], "boxes", [("hole", A, "relabelled")],
     "hole", True),
    # a confirmed class is kept; a class the VLM did not name is dropped, and so is a weaker guess of the
    # confirmed class below the band (one VLM word does not confirm every faint guess)
    ([det("scratch", 0.45, A), det("stain", 0.3, B), det("scratch", 0.08, C)], "defect", ["scratch"], "boxes",
     [("scratch", A, "confirmed")], "scratch", True),
    # a named class with nothing put forward takes its single best guess below the band, not the others
    ([det("stain", 0.12, A), det("stain", 0.07, B), det("scratch", 0.5, C)], "defect", ["stain"], "boxes",
     [("stain", A, "confirmed_below_band")], "stain", True),
    # below-band guesses of a named class come before relabelling a put-forward detection of another class
    ([det("hole", 0.3, A), det("stain", 0.1, B)], "defect", ["hole", "stain"], "boxes",
     [("hole", A, "confirmed"), ("stain", B, "confirmed_below_band")], "hole", True),
    # two named classes, one detected, the other relabelled from the best spare detection
    ([det("scratch", 0.4, A), det("stain", 0.3, B), det("missing", 0.1, C)], "defect", ["scratch", "hole"],
     "boxes", [("scratch", A, "confirmed"), ("hole", B, "relabelled")], "scratch", True),
    # a named class with no detection left to give it: left out of the detection export
    ([det("scratch", 0.4, A)], "defect", ["scratch", "hole"], "excluded", [], "scratch", True),
    # the VLM saw no defect: a background image
    ([det("scratch", 0.4, A)], "pass", [], "background", [], "pass", True),
    # the VLM could not tell: left out everywhere
    ([det("scratch", 0.4, A)], "uncertain", [], "excluded", [], None, True),
    # a defect answer naming no class of the model
    ([det("scratch", 0.4, A)], "defect", ["dent"], "excluded", [], None, True),
])
def test_the_rule(dets: list[Detection], verdict: str, classes: list[str], action: str,
                  expected: list[tuple[str, tuple[float, ...], str]], image_class: str | None, disagrees: bool) -> None:
    record = escalated(dets, verdict, classes)
    label = label_frame(record)
    assert (label.box_action, boxes(record), label.image_class, label.disagrees) == (
        action, expected, image_class, disagrees)


def test_vlm_words_match_classes_loosely_and_unknown_ones_are_noted() -> None:
    record = escalated([det("missing", 0.4, A)], "defect", ["Missing", "part"])
    label = label_frame(record)
    assert label.vlm_classes == ("missing",) and boxes(record) == [("missing", A, "confirmed")]
    assert any("part" in note for note in label.notes)


def test_several_named_classes_give_imagefolder_the_most_confident_one() -> None:
    record = escalated([det("scratch", 0.4, A), det("hole", 0.3, B)], "defect", ["hole", "scratch"])
    label = label_frame(record)  # hole's tag has 0.9, scratch's 0.8
    assert label.image_class == "hole" and any("several classes" in n for n in label.notes)


def test_min_score_leaves_weak_detections_out() -> None:
    record = escalated([det("scratch", 0.4, A), det("scratch", 0.06, B)], "defect", ["scratch"])
    assert boxes(record, min_score=0.1) == [("scratch", A, "confirmed")]


def test_a_confident_sample_keeps_the_accepted_detections_only() -> None:
    insp = inspection([det("hole", 0.9, A), det("stain", 0.3, B)])
    record = build_record(insp, "confident_sample", insp.event, MODEL, "box1")
    label = label_frame(record)
    assert (label.box_action, boxes(record), label.image_class, label.disagrees) == (
        "boxes", [("hole", A, "prefilter")], "hole", False)
    clean = inspection([])
    label = label_frame(build_record(clean, "confident_sample", clean.event, MODEL, "box1"))
    assert (label.box_action, label.boxes, label.image_class) == ("background", (), "pass")
