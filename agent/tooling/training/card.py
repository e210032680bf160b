"""Model cards (markdown) for trained models: the candidate of ``edge-agent models train``, and the pieces
scripts/train_detector.py shares with it (per-class table, what an earlier model's card says). Pure.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agent.tooling.training.progress import EpochRow, duration


@dataclasses.dataclass(frozen=True)
class EarlierTraining:
    """What a model's card says about how it was made (the lineage of a fine-tune)."""

    training: str  # the card's "training" row, or "unknown earlier training"
    reproduce: tuple[str, ...]  # the commands under "## Reproduce"
    map50: float | None  # the headline "mAP50 **x**", when the card has one


def read_earlier_training(card_text: str) -> EarlierTraining:
    training = next((line.split("|")[2].strip() for line in card_text.splitlines()
                     if line.startswith("| training |")), "unknown earlier training")
    reproduce: list[str] = []
    if "## Reproduce" in card_text:
        section = card_text.split("## Reproduce", 1)[1].split("\n## ", 1)[0].split("<!--", 1)[0]
        reproduce = [line.strip() for line in section.strip().splitlines()[1:] if line.strip()]
    mean_ap = re.search(r"mAP50 \*\*([0-9.]+)\*\*", card_text)
    return EarlierTraining(training=training, reproduce=tuple(reproduce),
                           map50=float(mean_ap.group(1)) if mean_ap else None)


def detector_class_table(per_class: Mapping[str, Mapping[str, float]]) -> str:
    """``| class | precision | recall | mAP50 | mAP50-95 |`` rows of a detector card."""
    return "\n".join(f"| {n} | {v['precision']:.3f} | {v['recall']:.3f} | {v['mAP50']:.3f} | {v['mAP50-95']:.3f} |"
                     for n, v in per_class.items())


@dataclasses.dataclass(frozen=True)
class Score:
    """One model on the validation split, measured with the agent's runtime."""

    metric: str  # mAP50 (detector) or accuracy (classifier)
    value: float
    per_class: Mapping[str, Mapping[str, float | int | None]]  # name -> support, precision, recall, AP50/F1
    per_class_metric: str  # AP50 or F1
    uncertain: float = 0.0  # share of the frames the default triage band calls uncertain (they would be escalated)


def _f(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}"


def _comparison(base: Score | None, candidate: Score) -> str:
    unit = "objects" if candidate.metric == "mAP50" else "frames"
    if base is None:
        rows = [f"| class | {unit} | candidate {candidate.per_class_metric} | candidate precision | candidate recall |",
                "|---|---|---|---|---|"]
        rows += [f"| {n} | {c['support']} | {_f(c['score'])} | {_f(c['precision'])} | {_f(c['recall'])} |"
                 for n, c in candidate.per_class.items()]
        return "\n".join(rows)
    rows = [f"| class | {unit} | base {base.per_class_metric} | candidate {candidate.per_class_metric} | "
            "candidate precision | candidate recall |", "|---|---|---|---|---|---|"]
    for name, c in candidate.per_class.items():
        b = base.per_class.get(name, {})
        rows.append(f"| {name} | {c['support']} | {_f(b.get('score'))} | {_f(c['score'])} | {_f(c['precision'])} "
                    f"| {_f(c['recall'])} |")
    return "\n".join(rows)


def _history(history: Sequence[EpochRow]) -> str:
    if not history:
        return "(no epoch finished)"
    loss_names = list(history[0].losses)
    metric_names = list(history[0].metrics)
    head = ("| epoch | " + " | ".join(f"{n} loss" for n in loss_names) + " | "
            + " | ".join(f"val {m}" for m in metric_names) + " | elapsed |")
    rows = [head, "|" + "---|" * (2 + len(loss_names) + len(metric_names))]
    for r in history:
        losses = " | ".join(f"{r.losses.get(n, float('nan')):.4f}" for n in loss_names)
        metrics = " | ".join(f"{r.metrics.get(m, float('nan')):.3f}" for m in metric_names)
        rows.append(f"| {r.epoch}/{r.epochs} | {losses} | {metrics} | {duration(r.elapsed_s)} |")
    return "\n".join(rows)


def _on_val(base_score: Score | None, candidate_score: Score) -> str:
    if base_score is None:
        return f"""Measured with the agent's runtime (`agent.prefilter`, the code the service runs):
{candidate_score.metric} **{candidate_score.value:.3f}** for the candidate (the base model has other classes:
no comparison). With the default triage band, {100 * candidate_score.uncertain:.1f}% of the frames are
uncertain (would go to the VLM). The val split is the dataset's own: it says how the training fits this
data; the promotion gate decides on a held-out set.

{_comparison(None, candidate_score)}"""
    change = (candidate_score.value - base_score.value) * 100
    return f"""Measured with the agent's runtime (`agent.prefilter`, the code the service runs):
{base_score.metric} **{base_score.value:.3f}** for the base model, **{candidate_score.value:.3f}** for the
candidate ({change:+.1f} points). With the default triage band, {100 * base_score.uncertain:.1f}% of the frames
are uncertain (would go to the VLM) with the base model, {100 * candidate_score.uncertain:.1f}% with the candidate.
The val split is the dataset's own: it says how the fine-tune fits this data; the promotion gate decides on a
held-out set.

{_comparison(base_score, candidate_score)}"""


def _origin(r: Mapping[str, Any]) -> tuple[str, str]:
    """(what the candidate is, the sentence on where it came from)."""
    task = "detector" if r["task"] == "detect" else "frame classifier"
    base = r["base"]
    budget = f" within a budget of {r['time_h']:g} h" if r.get("time_h") else ""
    if base.get("kind") == "yaml":
        return (f"{task} trained from scratch", f"A candidate made by `edge-agent models train` from the model yaml "
                f"`{base['file']}` (no pretrained weights){budget}:")
    if r.get("new_classes"):
        old = ", ".join(r["new_classes"]["base_names"]) or "the checkpoint's"
        return (f"{task} with new classes", f"A candidate made by `edge-agent models train --new-classes`{budget}: "
                f"the backbone of `{base['file']}` (classes {old}) with a new head for {', '.join(r['names'])},")
    return f"fine-tuned {task}", f"A candidate made by `edge-agent models train` from `{base['file']}`{budget}:"


def candidate_card(r: Mapping[str, Any], history: Sequence[EpochRow], base_score: Score | None,
                   candidate_score: Score) -> str:
    """The model card of a trained candidate. ``r`` is the candidate record (candidate.json)."""
    base, data, settings = r["base"], r["data"], r["settings"]
    what, origin = _origin(r)
    counts = "; ".join(f"{split}: {sum(c.values())} " + ("objects" if r["task"] == "detect" else "images") + " ("
                       + ", ".join(f"{n} {v}" for n, v in c.items()) + ")" for split, c in data["counts"].items())
    settings_text = ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None)
    lineage = base.get("training")
    files = f"`{r['files']['fp32']}` (FP32, input {r['input']})" + (
        f", INT8 `{r['files']['int8']}`" if r["files"].get("int8") else "")
    sha = f"sha256 {base['sha256'][:12]}, " if base.get("sha256") else ""
    base_text = f"`{base['file']}` ({sha}{base['precision']})" + (
        f"; its training: {lineage}" if lineage else "")
    training = (f"{len(history)} epoch(s), {duration(r['train_seconds'])} on {r['details']['machine']}; "
                f"{r['details']['tools']}")
    return f"""# {r['name']} — {what} (candidate)

{origin} trained on
`{data['source']}`, not yet deployed. Promote it with `edge-agent models promote`,
which compares it with the running model on a held-out labelled set.

| | |
|---|---|
| file | {files} |
| classes | {', '.join(f'{i}: {n}' for i, n in enumerate(r['names']))} |
| base model | {base_text} |
| architecture | {r['details']['architecture']}; {r['details']['init']} |
| data | `{data['source']}`: {data['train_images']} train / {data['val_images']} val images; {counts} |
| settings | {settings_text} |
| training | {training} |
| date | {r['created_at']} |

## On the dataset's val split

{_on_val(base_score, candidate_score)}

## Training progress

{_history(history)}

## Reproduce

    pip install -e '.[train]'
    {r['command']}
"""
