"""The promotion gate: may a candidate model replace the one the agent runs? Pure logic, and the
before/after report (``promotion.json`` + ``promotion.html``) beside the two evaluation reports.

Both models are evaluated on the same held-out labelled set. The candidate is refused when its metric
(0..1: mAP50, mAP50-95, accuracy or macro F1) is below the current model's by more than ``margin``:

    accepted  <=>  candidate >= current - margin

A positive margin tolerates noise (0.01: one point); a negative one asks for an improvement
(-0.01: at least one point better).

A candidate with other classes (``models promote --allow-new-classes``) cannot be compared: the running
model's class ids mean other things. Only the candidate is evaluated, on a held-out set of its own
classes, and it is refused when it finds none of them (metric 0): :func:`judge_class_change`.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agent.errors import EdgeAgentError

SCHEMA = "edge-agent/promotion/1"

METRICS: dict[str, tuple[str, str]] = {
    # CLI name: (task, key in ModelScore.metrics)
    "map50": ("detect", "mAP50"),
    "map50-95": ("detect", "mAP50-95"),
    "accuracy": ("classify", "accuracy"),
    "macro-f1": ("classify", "macro F1"),
    "auroc": ("anomaly", "image AUROC"),
}
DEFAULT_METRIC = {"detect": "map50", "classify": "accuracy", "anomaly": "auroc"}
CHANCE_AUROC = 0.5  # an anomaly score that says nothing about the frame
AUROC_MARGIN = 0.1  # a new anomaly model must beat chance by this much on the held-out set
_EPS = 1e-9


def metric_key(option: str | None, task: str) -> str:
    """The ModelScore key for a ``--metric`` option (None: the task's default). EdgeAgentError when the metric
    does not fit the task."""
    name = DEFAULT_METRIC.get(task) if option is None else option.lower()
    if name not in METRICS:
        raise EdgeAgentError(f"--metric {option!r}: expected one of {', '.join(METRICS)}")
    metric_task, key = METRICS[name]
    if metric_task != task:
        fits = ", ".join(m for m, (t, _k) in METRICS.items() if t == task)
        raise EdgeAgentError(f"--metric {name} is a {metric_task} metric but the model is a {task} model; "
                             f"use one of {fits}")
    return key


@dataclasses.dataclass(frozen=True)
class ModelScore:
    """One model's evaluation on the held-out set."""

    role: str  # "current" | "candidate"
    model_id: str
    path: pathlib.Path
    sha256: str
    precision: str  # fp32 | fp16 | int8
    metrics: Mapping[str, float]  # every task metric (0..1)
    per_class: Mapping[str, float | None]  # per_class_metric by class name; None: no ground truth
    per_class_metric: str  # AP50 (detector) | F1 (classifier)
    verdicts: tuple[str, ...]  # per image, after triage
    latency_p50_ms: float
    report: pathlib.Path  # its report.html


@dataclasses.dataclass(frozen=True)
class PromotionDecision:
    metric: str
    current: float | None  # None: a class change, the running model was not comparable
    candidate: float
    margin: float
    accepted: bool
    reason: str
    first: bool = False  # the line's first model: there was no running model at all
    floor: float = 0.0  # a class change: the bar the candidate must pass (0, or a classifier's class prior)
    floor_desc: str = "0"

    @property
    def difference(self) -> float | None:
        return None if self.current is None else self.candidate - self.current

    def numbers(self) -> str:
        if self.current is None:
            why = "the line's first model: there is no running model" if self.first else \
                "new classes: the running model has other classes"
            return (f"{self.metric}: candidate {self.candidate:.4f} ({why}, not compared; refused at or below "
                    f"{self.floor_desc})")
        return (f"{self.metric}: current {self.current:.4f}, candidate {self.candidate:.4f}, difference "
                f"{self.candidate - self.current:+.4f}, margin {self.margin:.4f} (refused below "
                f"{self.current - self.margin:.4f})")

    def as_json(self) -> dict[str, Any]:
        current = self.current
        return {"metric": self.metric, "current": None if current is None else round(current, 6),
                "candidate": round(self.candidate, 6),
                "difference": None if current is None else round(self.candidate - current, 6),
                "margin": None if current is None else self.margin,
                "threshold": round(self.floor, 6) if current is None else round(current - self.margin, 6),
                "accepted": self.accepted,
                "reason": self.reason}


def judge_promotion(metric: str, current: float, candidate: float, margin: float) -> PromotionDecision:
    """Accept the candidate unless its metric is below ``current - margin``."""
    if not -1.0 <= margin <= 1.0:
        raise EdgeAgentError(f"--margin {margin:g}: expected a difference of the metric in -1..1 (0.01 = one point; "
                             "negative asks the candidate to be better by that much)")
    threshold = current - margin
    if candidate + _EPS >= threshold:
        how = "not worse than" if candidate + _EPS >= current else "within the margin of"
        return PromotionDecision(metric, current, candidate, margin, True,
                                 f"candidate {metric} {candidate:.4f} is {how} the current {current:.4f}")
    if margin >= 0:
        reason = (f"candidate {metric} {candidate:.4f} is {current - candidate:.4f} below the current model's "
                  f"{current:.4f}; the margin allows at most {margin:.4f}")
    else:
        reason = (f"candidate {metric} {candidate:.4f} is {candidate - current:+.4f} against the current model's "
                  f"{current:.4f}; the margin {margin:.4f} asks for at least {-margin:+.4f}")
    return PromotionDecision(metric, current, candidate, margin, False, reason)


def judge_class_change(metric: str, candidate: float, current_names: tuple[str, ...],
                       candidate_names: tuple[str, ...], prior: float | None = None) -> PromotionDecision:
    """A candidate with other classes, promoted on request: the running model is not compared (its class ids mean
    other things). A detector is accepted unless it finds none of its classes on the held-out set (``metric`` 0);
    a classifier (``prior``: the metric of always answering the held-out set's most common class) must beat that
    prior, or it has learnt nothing a constant would not say."""
    change = (f"classes change from [{', '.join(current_names)}] to [{', '.join(candidate_names)}] "
              "(--allow-new-classes)") if current_names else \
        f"the line's first model, classes [{', '.join(candidate_names)}] (no model ran before)"
    first = not current_names
    if prior is None:
        floor, floor_desc = 0.0, "0"
        refused = (f"candidate {metric} {candidate:.4f}: it finds none of its classes on the held-out set; "
                   f"{change}")
    else:
        floor, floor_desc = prior, f"{prior:.4f}, the class prior"
        refused = (f"candidate {metric} {candidate:.4f} is no better than always answering the held-out set's most "
                   f"common class ({metric} {prior:.4f}): it has learnt nothing yet; {change}")
    if candidate <= floor + _EPS:
        return PromotionDecision(metric, None, candidate, 0.0, False, refused, first=first, floor=floor,
                                 floor_desc=floor_desc)
    compared = "the running model has other classes and is not compared" if current_names else \
        "there is no running model to compare"
    beats = "" if prior is None else f" (the class prior gives {prior:.4f})"
    return PromotionDecision(metric, None, candidate, 0.0, True, f"candidate {metric} {candidate:.4f}{beats}; "
                             f"{change}; {compared}", first=first, floor=floor, floor_desc=floor_desc)


def judge_new_anomaly(candidate: float, false_reject_rate: float, current: str | None,
                      margin: float = AUROC_MARGIN) -> PromotionDecision:
    """An anomaly model where none ran before (``current``: None for the line's first model, else what the running
    model was, e.g. "a classify model"): accepted when its image AUROC on the held-out set beats chance (0.5) by
    ``margin``; the false-reject rate of good frames at its threshold is stated with the decision."""
    metric, floor = "image AUROC", CHANCE_AUROC + margin
    change = "the line's first model, an anomaly model (no model ran before)" if current is None else \
        f"the task changes from {current} to an anomaly model (--allow-new-classes)"
    frr = f"at its threshold it rejects {100 * false_reject_rate:.1f}% of the held-out good frames"
    desc = f"{floor:.4f}, chance ({CHANCE_AUROC:g}) + {margin:g}"
    if candidate <= floor + _EPS:
        reason = (f"candidate {metric} {candidate:.4f} is not better than chance ({CHANCE_AUROC:g}) by {margin:g}: "
                  f"its score does not yet tell good frames from defective ones; {frr}; {change}")
        return PromotionDecision(metric, None, candidate, 0.0, False, reason, first=current is None, floor=floor,
                                 floor_desc=desc)
    return PromotionDecision(metric, None, candidate, 0.0, True, f"candidate {metric} {candidate:.4f} (chance "
                             f"{CHANCE_AUROC:g}); {frr}; {change}", first=current is None, floor=floor,
                             floor_desc=desc)


def class_prior(metric: str, truth: Sequence[int], names: Sequence[str]) -> float:
    """``metric`` ("accuracy" or "macro F1") of a classifier that always answers the most common class of ``truth``
    (ties: the lower class id): the bar a classifier with new classes must pass."""
    from agent.tooling.evaluation.classification import evaluate_classification

    if not truth:
        raise ValueError("class_prior: expected at least one held-out image")
    counts = np.bincount(np.asarray(truth, dtype=np.int64), minlength=len(names))
    scores = evaluate_classification(truth, np.full(len(truth), int(counts.argmax())), names)
    return {"accuracy": scores.accuracy, "macro F1": scores.macro_f1}[metric]


def verdicts_changed(current: ModelScore, candidate: ModelScore) -> int:
    if len(current.verdicts) != len(candidate.verdicts):
        raise ValueError("both models must be evaluated on the same images")
    return sum(a != b for a, b in zip(current.verdicts, candidate.verdicts, strict=True))


def _score_json(s: ModelScore) -> dict[str, Any]:
    return {"model_id": s.model_id, "path": str(s.path), "sha256": s.sha256, "precision": s.precision,
            "metrics": {k: round(v, 6) for k, v in s.metrics.items()},
            "per_class": {"metric": s.per_class_metric,
                          "classes": {k: None if v is None else round(v, 6) for k, v in s.per_class.items()}},
            "latency_p50_ms": round(s.latency_p50_ms, 2), "report": str(s.report)}


def promotion_document(decision: PromotionDecision, current: ModelScore | None, candidate: ModelScore, *,
                       task: str, dataset: str, images: int, model_path: pathlib.Path, created: datetime.datetime,
                       notes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The promotion.json document; ``current`` None for a class change (the running model not evaluated)."""
    return {
        "schema": SCHEMA,
        "created_at": created.isoformat(timespec="seconds"),
        "model_path": str(model_path),
        "task": task,
        "validation": {"data": dataset, "images": images},
        "decision": decision.as_json(),
        "verdicts_changed": None if current is None else verdicts_changed(current, candidate),
        "current": None if current is None else _score_json(current),
        "candidate": _score_json(candidate),
        "notes": list(notes),
    }


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#f6f7f9}
main{max-width:1040px;margin:0 auto;padding:28px 24px 48px}h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 10px}.sub{color:#666;margin:0 0 20px}
.banner{padding:12px 16px;border-radius:8px;font-weight:600;margin:0 0 8px}
.ok{background:#e6f4ea;color:#1e6b34}.no{background:#fce8e6;color:#a50e0e}
table{border-collapse:collapse;background:#fff;border:1px solid #e3e5e8}
th,td{padding:7px 14px;text-align:right;border-bottom:1px solid #eef0f2}
th{background:#fafbfc}td:first-child,th:first-child{text-align:left}tr.key td{font-weight:600}
td.up{color:#1e6b34}td.down{color:#a50e0e}.note{color:#666;font-size:12.5px}
"""


def _cell(v: float | None) -> str:
    return '<td class="na">–</td>' if v is None else f"<td>{v:.4f}</td>"


def _diff(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return '<td class="na">–</td>'
    d = b - a
    return f'<td class="{"up" if d > _EPS else "down" if d < -_EPS else ""}">{d:+.4f}</td>'


def promotion_html(doc: dict[str, Any], current: ModelScore | None, candidate: ModelScore,
                   report_dir: pathlib.Path) -> str:
    e = html.escape
    d = doc["decision"]
    banner = ("ok", "Accepted") if d["accepted"] else ("no", "Refused")
    rows = []
    before: Mapping[str, float] = current.metrics if current else {}
    for key in candidate.metrics:
        cls = ' class="key"' if key == d["metric"] else ""
        rows.append(f"<tr{cls}><td>{e(key)}</td>{_cell(before.get(key))}{_cell(candidate.metrics.get(key))}"
                    f"{_diff(before.get(key), candidate.metrics.get(key))}</tr>")
    classes = current.per_class if current else dict.fromkeys(candidate.per_class)
    per_class = [f"<tr><td>{e(name)}</td>{_cell(v)}{_cell(candidate.per_class.get(name))}"
                 f"{_diff(v, candidate.per_class.get(name))}</tr>" for name, v in classes.items()]
    rule = (f"accepted when candidate &ge; current &minus; margin ({d['margin']:g}) on {e(d['metric'])}. Frame "
            f"verdicts (after triage) differ on {doc['verdicts_changed']} of {doc['validation']['images']} images."
            if current else f"new classes: the running model has other classes and is not evaluated; the "
            f"candidate is refused when its {e(d['metric'])} is 0.")

    def link(s: ModelScore) -> str:
        try:
            rel = s.report.relative_to(report_dir)
        except ValueError:
            rel = s.report
        return f'<a href="{e(str(rel))}">{e(s.model_id)}</a>'

    notes = "".join(f"<p class=note>{e(n)}</p>" for n in doc["notes"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Promotion: {e(candidate.model_id)}</title><style>{_CSS}</style></head>
<body><main>
<h1>Promotion gate</h1>
<p class="sub">candidate <code>{e(str(candidate.path))}</code> vs the running <code>{e(doc['model_path'])}</code>
on <code>{e(doc['validation']['data'])}</code> ({doc['validation']['images']} images)</p>
<div class="banner {banner[0]}">{banner[1]}: {e(d['reason'])}</div>
<p class=note>Rule: {rule}</p>
<h2>Metrics</h2>
<table><thead><tr><th>metric</th><th>current</th><th>candidate</th><th>change</th></tr></thead><tbody>
{chr(10).join(rows)}
<tr><td>eval latency p50 (ms)</td>{f"<td>{current.latency_p50_ms:.1f}</td>" if current else _cell(None)}
<td>{candidate.latency_p50_ms:.1f}</td><td></td></tr>
</tbody></table>
<h2>Per class ({e(candidate.per_class_metric)})</h2>
<table><thead><tr><th>class</th><th>current</th><th>candidate</th><th>change</th></tr></thead><tbody>
{chr(10).join(per_class)}
</tbody></table>
<h2>Full reports</h2>
<p>current: {link(current) if current else "not evaluated"} · candidate: {link(candidate)}</p>{notes}
</main></body></html>
"""


@dataclasses.dataclass(frozen=True)
class PromotionReportFiles:
    json: pathlib.Path
    html: pathlib.Path


def write_promotion_report(out_dir: pathlib.Path, doc: dict[str, Any], current: ModelScore | None,
                           candidate: ModelScore) -> PromotionReportFiles:
    files = PromotionReportFiles(out_dir / "promotion.json", out_dir / "promotion.html")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        files.json.write_text(json.dumps(doc, indent=1) + "\n")
        files.html.write_text(promotion_html(doc, current, candidate, out_dir), encoding="utf-8")
    except OSError as exc:
        raise EdgeAgentError(f"cannot write the promotion report into {out_dir}: {exc.strerror or exc}") from exc
    return files
