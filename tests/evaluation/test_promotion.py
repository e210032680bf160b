"""The promotion gate's rule (pure): accepted <=> candidate >= current - margin."""

from __future__ import annotations

import pytest

from agent.errors import EdgeAgentError
from agent.tooling.evaluation.promotion import judge_promotion, metric_key

CASES = [
    # (current, candidate, margin, accepted, words in the reason)
    (0.90, 0.95, 0.01, True, "is not worse than the current 0.9000"),  # better
    (0.90, 0.90, 0.00, True, "is not worse than"),  # equal, no margin
    (0.90, 0.895, 0.01, True, "is within the margin of the current 0.9000"),  # 0.5 points worse, 1 allowed
    (0.90, 0.89, 0.01, True, "within the margin"),  # exactly at the threshold
    (0.90, 0.885, 0.01, False, "candidate mAP50 0.8850 is 0.0150 below the current model's 0.9000; the margin "
                               "allows at most 0.0100"),
    (0.90, 0.905, -0.01, False, "is +0.0050 against the current model's 0.9000; the margin -0.0100 asks for at "
                                "least +0.0100"),  # a negative margin asks for an improvement
    (0.90, 0.91, -0.01, True, "is not worse than"),  # improved by exactly the asked point
]


@pytest.mark.parametrize(("current", "candidate", "margin", "accepted", "reason"), CASES)
def test_the_rule(current: float, candidate: float, margin: float, accepted: bool, reason: str) -> None:
    d = judge_promotion("mAP50", current, candidate, margin)
    assert d.accepted is accepted and reason in d.reason
    assert d.difference == pytest.approx(candidate - current)
    assert d.as_json()["threshold"] == pytest.approx(current - margin)


def test_the_numbers_line() -> None:
    d = judge_promotion("mAP50", 0.9207, 0.7463, 0.01)
    assert d.numbers() == ("mAP50: current 0.9207, candidate 0.7463, difference -0.1744, margin 0.0100 "
                           "(refused below 0.9107)")


@pytest.mark.parametrize(("option", "task", "key"), [
    (None, "detect", "mAP50"), (None, "classify", "accuracy"), ("map50-95", "detect", "mAP50-95"),
    ("MACRO-F1", "classify", "macro F1"),
])
def test_metric_names(option: str | None, task: str, key: str) -> None:
    assert metric_key(option, task) == key


def test_a_metric_of_the_other_task_or_unknown_is_refused() -> None:
    with pytest.raises(EdgeAgentError, match="--metric map50 is a detect metric but the model is a classify model; "
                                             "use one of accuracy, macro-f1"):
        metric_key("map50", "classify")
    with pytest.raises(EdgeAgentError, match="expected one of map50, map50-95, accuracy, macro-f1"):
        metric_key("f2", "detect")
    with pytest.raises(EdgeAgentError, match="--margin 1.5"):
        judge_promotion("mAP50", 0.5, 0.5, 1.5)


def test_the_class_prior_is_what_always_answering_the_most_common_class_scores() -> None:
    from agent.tooling.evaluation.promotion import class_prior

    truth = [0] * 6 + [1] * 3 + [2]  # pass 60%, scratch 30%, pit 10%
    names = ("pass", "scratch", "pit")
    assert class_prior("accuracy", truth, names) == pytest.approx(0.6)
    # macro F1: pass F1 = 2 * 0.6 * 1 / 1.6 = 0.75; the other two 0; the mean over the three classes present
    assert class_prior("macro F1", truth, names) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least one held-out image"):
        class_prior("accuracy", [], names)


def test_a_first_classifier_must_beat_the_class_prior() -> None:
    """Day zero: a learning line's first classifier at 0.46 accuracy on a held-out set that is 60% pass has learnt
    less than a constant 'pass' would say; it is refused, and the numbers say why. One above the prior passes."""
    from agent.tooling.evaluation.promotion import judge_class_change

    refused = judge_class_change("accuracy", 0.46, (), ("pass", "scratch"), prior=0.6)
    assert not refused.accepted and refused.first
    assert "no better than always answering the held-out set's most common class (accuracy 0.6000)" in refused.reason
    assert refused.numbers() == ("accuracy: candidate 0.4600 (the line's first model: there is no running model, "
                                 "not compared; refused at or below 0.6000, the class prior)")
    assert refused.as_json()["threshold"] == 0.6 and refused.as_json()["accepted"] is False
    at_prior = judge_class_change("accuracy", 0.6, (), ("pass", "scratch"), prior=0.6)
    assert not at_prior.accepted
    accepted = judge_class_change("accuracy", 0.71, (), ("pass", "scratch"), prior=0.6)
    assert accepted.accepted and "(the class prior gives 0.6000)" in accepted.reason
    # a detector keeps the bar of 0: it must find some of its classes
    assert judge_class_change("mAP50", 0.01, (), ("pit",)).accepted
