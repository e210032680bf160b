"""The cascade evaluation's pure parts: predictions from records, and image-level scores worked by hand."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from agent.errors import DatasetError
from agent.tooling.evaluation.cascade import (
    Prediction,
    Truth,
    cascade_prediction,
    evaluate,
    prefilter_prediction,
    vlm_prediction,
)
from agent.tooling.evaluation.truth import read_ground_truth

CLASSES = ("scratch", "hole", "stain", "missing")
ALL = frozenset(CLASSES)


def t(*classes: str) -> Truth:
    return Truth(frozenset(classes))


def p(*classes: str, escalated: bool = False) -> Prediction:
    return Prediction(frozenset(classes), escalated)


def test_scores_worked_by_hand() -> None:
    truths = [t("scratch"), t("scratch", "hole"), t(), t(), t("hole")]
    preds = [p("scratch", escalated=True),  # scratch TP; defect TP
             p("hole"),                      # scratch FN, hole TP; defect TP
             p("scratch", escalated=True),   # scratch FP; defect FP
             p(),                            # all TN
             p()]                            # hole FN; defect FN
    r = evaluate("cascade", CLASSES, truths, preds)
    assert (r.images, r.escalated, r.escalation_rate) == (5, 2, 0.4)
    # defect: support 3, predicted 3, TP 2 -> P 2/3, R 2/3, F1 2*2/(3+3) = 2/3
    assert (r.defect.support, r.defect.predicted, r.defect.true_positives) == (3, 3, 2)
    assert r.defect.precision == pytest.approx(2 / 3)
    assert r.defect.recall == pytest.approx(2 / 3)
    assert r.defect.f1 == pytest.approx(2 / 3)
    # scratch: support 2, predicted 2, TP 1 -> P 0.5, R 0.5, F1 0.5
    s = r.classes["scratch"]
    assert (s.precision, s.recall, s.f1) == (0.5, 0.5, 0.5)
    # hole: support 2, predicted 1, TP 1 -> P 1, R 0.5, F1 2/3
    h = r.classes["hole"]
    assert (h.precision, h.recall) == (1.0, 0.5)
    assert h.f1 == pytest.approx(2 / 3)
    # stain: nothing true, nothing predicted -> undefined, and left out of the macro F1 (mean of 0.5 and 2/3)
    assert (r.classes["stain"].precision, r.classes["stain"].recall, r.classes["stain"].f1) == (None, None, None)
    assert r.macro_f1 == pytest.approx((0.5 + 2 / 3) / 2)


def test_predictions_need_one_per_image() -> None:
    with pytest.raises(ValueError, match="2 truths, 1 predictions"):
        evaluate("x", CLASSES, [t(), t()], [p()])


def record(verdict: str, decided_by: str, tags: list[dict[str, Any]], status: str = "not_needed",
           defects: list[dict[str, str]] | None = None) -> dict[str, Any]:
    esc: dict[str, Any] = {"status": status}
    if defects is not None:
        esc["defects"] = defects
    return {"item": "a.png", "path": "a.png", "frame": None, "verdict": verdict, "decided_by": decided_by,
            "tags": tags, "escalation": esc}


def tag(label: str, state: str, source: str = "prefilter") -> dict[str, Any]:
    return {"label": label, "confidence": 0.5, "state": state, "source": source}


@pytest.mark.parametrize(("rec", "prefilter", "cascade"), [
    # confident defect, not escalated: the prefilter's tags stand in both (the uncertain one too)
    (record("defect", "prefilter", [tag("hole", "accepted"), tag("stain", "uncertain")]),
     {"hole", "stain"}, {"hole", "stain"}),
    # the VLM could not tell: the prefilter rule
    (record("uncertain", "vlm", [tag("scratch", "uncertain"), tag("dent", "uncertain", "vlm")], status="answered"),
     {"scratch"}, {"scratch"}),
    # uncertain without a gateway: the prefilter rule (every kept tag) in both
    (record("uncertain", "prefilter", [tag("scratch", "uncertain")], status="unavailable"),
     {"scratch"}, {"scratch"}),
    # the VLM cleared it
    (record("pass", "vlm", [tag("scratch", "uncertain"), tag("part", "accepted", "vlm")], status="answered"),
     {"scratch"}, set()),
    # the VLM found a hole (its defect type), not the prefilter's scratch
    (record("defect", "vlm", [tag("scratch", "uncertain"), tag("hole", "accepted", "vlm")], status="answered",
            defects=[{"type": "hole", "location": "centre", "severity": "high"}]), {"scratch"}, {"hole"}),
    # the VLM says defect with a type that is no class: still a defect, no class
    (record("defect", "vlm", [tag("scratch", "uncertain")], status="answered",
            defects=[{"type": "other", "location": "edge", "severity": "low"}]), {"scratch"}, {"other"}),
])
def test_predictions_from_records(rec: dict[str, Any], prefilter: set[str], cascade: set[str]) -> None:
    assert prefilter_prediction(rec, ALL) == Prediction(frozenset(prefilter))
    got = cascade_prediction(rec, ALL)
    assert got.classes == frozenset(cascade)
    assert got.escalated == (rec["escalation"]["status"] != "not_needed")


def test_vlm_prediction_falls_back_to_the_prefilter_rule_without_a_verdict() -> None:
    rec = record("uncertain", "prefilter", [tag("stain", "uncertain")])
    assert vlm_prediction(rec, ALL, None, [], []) == p("stain", escalated=True)
    assert vlm_prediction(rec, ALL, "uncertain", [], []) == p("stain", escalated=True)
    assert vlm_prediction(rec, ALL, "pass", [], []) == p(escalated=True)
    assert vlm_prediction(rec, ALL, "defect", ["missing"], [("hole", 0.8), ("metal", 0.9)]) == p(
        "missing", "hole", escalated=True)


def test_yolo_labels_are_matched_by_the_end_of_the_path(tmp_path: pathlib.Path) -> None:
    labels = tmp_path / "labels" / "val"
    labels.mkdir(parents=True)
    (labels / "000001.txt").write_text("1 0.5 0.5 0.1 0.1\n3 0.2 0.2 0.1 0.1\n")
    (labels / "000002.txt").write_text("")
    truth, strip = read_ground_truth(tmp_path / "labels", CLASSES)
    assert strip
    assert truth.lookup("data/images/val/000001.jpg", strip) == t("hole", "missing")
    assert truth.lookup("000002.png", strip) == t()
    assert truth.lookup("data/images/val/000003.jpg", strip) is None


def test_yolo_class_id_out_of_range_names_it(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match="class id 7 is out of range"):
        read_ground_truth(tmp_path, CLASSES)


def test_csv_labels(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("image,label\nimages/a.jpg,hole\nimages/a.jpg,stain\nb.jpg,pass\n")
    truth, strip = read_ground_truth(f, ("pass", *CLASSES))  # a classifier's pass is no defect class
    assert not strip
    assert truth.lookup("x/images/a.jpg", strip) == t("hole", "stain")
    assert truth.lookup("b.jpg", strip) == t()
    f.write_text("image,label\na.jpg,dent\n")
    with pytest.raises(DatasetError, match=r"'dent' \(line 2\).*scratch, hole, stain, missing"):
        read_ground_truth(f, CLASSES)
