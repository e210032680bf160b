"""How good the cascade's tags are: image-level precision, recall and F1 of three strategies. Pure logic.

Each image has a *truth* (:class:`Truth`: the defect classes it carries; none means ``pass``) and, per
strategy, a *prediction* (:class:`Prediction`: the same, plus whether the VLM was asked). The strategies:

* ``prefilter``: the prefilter alone, no VLM. An uncertain image is decided at the reject threshold:
  every tag the triage kept (``accepted`` or ``uncertain``, i.e. confidence >= ``reject``) counts as a
  defect of its class (:func:`prefilter_prediction`). Nothing is escalated.
* ``cascade``: what ``edge-agent tag`` published (:func:`cascade_prediction`): where the VLM decided
  (``decided_by: vlm``, verdict ``pass`` or ``defect``), the VLM's verdict and defect types (and its tags
  that name a class); everywhere else the prefilter rule above (the prefilter's verdicts and tags stand,
  and an image left ``uncertain``, by no gateway, a failed call or a VLM that could not tell, is decided at
  the reject threshold). So the cascade differs from the prefilter alone exactly where the VLM answered.
* ``vlm``: the VLM asked about every image (:func:`vlm_prediction`); its verdict decides, with the same
  fallback when it gives none.

Metrics (:func:`evaluate`): per class, "does the image carry this class" (true positive: the truth and the
prediction both name it); overall, ``defect`` versus ``pass`` with defect as the positive class. Precision,
recall and F1 are None where undefined (0/0). The escalation rate is the share of images a strategy escalates:
none for the prefilter alone, every one for the VLM, and for the cascade its uncertain images (the records
whose escalation status is not ``not_needed``, as tag's summary counts them, answered or not).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

STRATEGIES: tuple[str, ...] = ("prefilter", "cascade", "vlm")
STRATEGY_TITLES: dict[str, str] = {"prefilter": "prefilter alone", "cascade": "cascade",
                                   "vlm": "VLM on every image"}
PASS_LABEL = "pass"


@dataclasses.dataclass(frozen=True)
class Truth:
    classes: frozenset[str]

    @property
    def defect(self) -> bool:
        return bool(self.classes)


@dataclasses.dataclass(frozen=True)
class Prediction:
    classes: frozenset[str]
    escalated: bool = False

    @property
    def defect(self) -> bool:
        return bool(self.classes)


@dataclasses.dataclass(frozen=True)
class Scores:
    """Counts and rates of one binary question over the images."""

    support: int  # images where the truth says yes
    predicted: int  # images where the prediction says yes
    true_positives: int

    @property
    def precision(self) -> float | None:
        return self.true_positives / self.predicted if self.predicted else None

    @property
    def recall(self) -> float | None:
        return self.true_positives / self.support if self.support else None

    @property
    def f1(self) -> float | None:
        denominator = self.support + self.predicted
        return 2 * self.true_positives / denominator if denominator else None

    def to_json(self) -> dict[str, Any]:
        return {"support": self.support, "predicted": self.predicted, "true_positives": self.true_positives,
                "precision": _r(self.precision), "recall": _r(self.recall), "f1": _r(self.f1)}


@dataclasses.dataclass(frozen=True)
class StrategyResult:
    name: str
    images: int
    escalated: int
    defect: Scores
    classes: dict[str, Scores]

    @property
    def escalation_rate(self) -> float:
        return self.escalated / self.images if self.images else 0.0

    @property
    def macro_f1(self) -> float | None:
        """Mean F1 over the classes that occur in the truth."""
        values = [s.f1 for s in self.classes.values() if s.support and s.f1 is not None]
        return sum(values) / len(values) if values else None

    def to_json(self) -> dict[str, Any]:
        return {"title": STRATEGY_TITLES.get(self.name, self.name), "images": self.images,
                "escalated": self.escalated, "escalation_rate": _r(self.escalation_rate),
                "defect": self.defect.to_json(), "macro_f1": _r(self.macro_f1),
                "classes": {k: v.to_json() for k, v in self.classes.items()}}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _scores(pairs: Sequence[tuple[bool, bool]]) -> Scores:
    return Scores(support=sum(t for t, _ in pairs), predicted=sum(p for _, p in pairs),
                  true_positives=sum(t and p for t, p in pairs))


def evaluate(name: str, class_names: Sequence[str], truths: Sequence[Truth],
             predictions: Sequence[Prediction]) -> StrategyResult:
    """Image-level scores of one strategy; ``truths`` and ``predictions`` are paired by position."""
    if len(truths) != len(predictions):
        raise ValueError(f"expected one prediction per image: {len(truths)} truths, {len(predictions)} predictions")
    pairs = list(zip(truths, predictions, strict=True))
    return StrategyResult(
        name=name, images=len(pairs), escalated=sum(p.escalated for p in predictions),
        defect=_scores([(t.defect, p.defect) for t, p in pairs]),
        classes={c: _scores([(c in t.classes, c in p.classes) for t, p in pairs]) for c in class_names})


# -- predictions from records ------------------------------------------------------------------------


def _labels(tags: Iterable[Mapping[str, Any]], classes: frozenset[str], states: tuple[str, ...],
            source: str) -> frozenset[str]:
    return frozenset(str(t["label"]) for t in tags
                     if t.get("source", "prefilter") == source and t.get("state") in states
                     and str(t["label"]) in classes)


def prefilter_prediction(record: Mapping[str, Any], classes: frozenset[str]) -> Prediction:
    """The prefilter alone, uncertain items decided at the reject threshold (see the module doc)."""
    return Prediction(_labels(record["tags"], classes, ("accepted", "uncertain"), "prefilter"))


def _escalated(record: Mapping[str, Any]) -> bool:
    return str(record["escalation"]["status"]) != "not_needed"


def _vlm_classes(defect_types: Iterable[str], tags: Iterable[Mapping[str, Any]],
                 classes: frozenset[str]) -> frozenset[str]:
    return frozenset(t for t in defect_types if t in classes) | _labels(tags, classes, ("accepted",), "vlm")


def cascade_prediction(record: Mapping[str, Any], classes: frozenset[str]) -> Prediction:
    """What the cascade published for one item (see the module doc)."""
    escalated = _escalated(record)
    if record["decided_by"] == "vlm" and record["verdict"] in ("pass", "defect"):
        if record["verdict"] == "pass":
            return Prediction(frozenset(), escalated)
        found = _vlm_classes((str(d["type"]) for d in record["escalation"].get("defects") or ()),
                             record["tags"], classes)
        # a VLM defect verdict naming none of the model's classes (``other``) still says defect
        return Prediction(found or frozenset({"other"}), escalated)
    return dataclasses.replace(prefilter_prediction(record, classes), escalated=escalated)


def vlm_prediction(record: Mapping[str, Any], classes: frozenset[str], verdict: str | None,
                   defect_types: Sequence[str], tags: Sequence[tuple[str, float]]) -> Prediction:
    """The VLM asked about this item: its ``verdict`` (None: no answer) decides; the prefilter rule when
    it gives none or says ``uncertain``."""
    if verdict == "pass":
        return Prediction(frozenset(), True)
    if verdict == "defect":
        found = frozenset(t for t in defect_types if t in classes) | frozenset(
            label for label, _ in tags if label in classes)
        return Prediction(found or frozenset({"other"}), True)
    return dataclasses.replace(prefilter_prediction(record, classes), escalated=True)
