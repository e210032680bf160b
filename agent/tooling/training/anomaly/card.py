"""The model card of an anomaly candidate (``OUT/<name>.md``); ``models quantize`` appends its INT8 section."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def anomaly_card(r: Mapping[str, Any], histogram: Sequence[str]) -> str:
    t, v, tr, g = r["threshold"], r["validation"], r["training"], r["good"]
    h, w = r["input"]
    lines = [
        f"# {r['name']} (anomaly, trained on good frames only)", "",
        "Task `anomaly`: outputs `anomaly_map` (1/4 of the input) and `score`; see docs/anomaly.md.", "",
        f"- Input: {w}x{h} ({'grey' if r['grey'] else 'colour'} frames), stretched, area filter",
        f"- Good frames: {g['images']} (" + "; ".join(g["sources"]) + ")",
        f"- Training: {tr['wall_s']:.0f} s wall, {tr['cpu_s']:.0f} s CPU, seed {tr['seed']}; generic synthetic "
        "anomalies (value-noise masks filled with other good frames' patches, noise, brightness shifts, strokes)",
        f"- Threshold: {t['threshold']:.4f}, at a false-reject rate of {t['false_reject_rate']:.1%} on "
        f"{t['held_out']} held-out good frames",
        f"- Training frames above the threshold: {t['training_frames_above']} (defects mixed into the good set "
        "show up here)", "",
        "## On the validation set", "",
        f"{v['images']} images: the held-out good frames, the same frames with generic synthetic anomalies"
        + (f", and {v['labelled_defects']} labelled defects" if v["labelled_defects"] else "") + ".", "",
        "| image AUROC | pixel AUROC | false-reject rate | recall | precision |", "|---|---|---|---|---|",
        f"| {_f(v['image_auroc'])} | {_f(v['pixel_auroc'])} | {_f(v['false_reject_rate'])} | {_f(v['recall'])} | "
        f"{_f(v['precision'])} |", "", *_labelled_lines(v.get("labelled")),
        "Score histogram:", "", *[f"    {line}" for line in histogram], "",
        "Reproduce:", "", f"    {r['command']}", ""]
    return "\n".join(lines)


def _labelled_lines(lab: Mapping[str, Any] | None) -> list[str]:
    if not lab:
        return []
    return [f"On the {lab['defects']} labelled defects (`--defects`) and the {lab['good']} held-out good frames alone: "
            f"image AUROC {_f(lab['image_auroc'])}; at the threshold recall {_f(lab['recall'])}, precision "
            f"{_f(lab['precision'])}, false-reject rate {_f(lab['false_reject_rate'])}.", ""]
