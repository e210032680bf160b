"""The classifier evaluation report: ``eval.json`` (every number), ``report.html``
(one self-contained page, charts embedded as base64 PNG) and the charts as files
(``confusion_matrix.png``, ``per_class.png``). The detector's report is
``agent.tooling.evaluation.report``; this one shares its drawing helpers and style.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import json
import pathlib
from typing import Any

import cv2
import numpy as np

from agent.errors import EdgeAgentError
from agent.tooling.evaluation.classification import ClassificationMetrics
from agent.tooling.evaluation.classify_dataset import TriageSummary
from agent.tooling.evaluation.report import (
    _CSS,
    _GRID,
    _INK,
    _MUTED,
    _PALETTE,
    _SS,
    _encode_png,
    _finish,
    _img_tag,
    _put,
    _put_vertical,
    _r,
    _text_width,
    render_confusion_matrix,
)

SCHEMA = "edge-agent/eval-classification/1"


@dataclasses.dataclass(frozen=True)
class ClassifyEvalContext:
    """What was evaluated, and how."""

    model_id: str
    model_path: pathlib.Path
    dataset: pathlib.Path
    split: str
    started: datetime.datetime
    finished: datetime.datetime
    input_size: tuple[int, int]  # model input (width, height)
    preprocessing: dict[str, Any]  # resize, interpolation, mean, std, output (as the model's metadata says)
    triage: TriageSummary | None = None
    latency_p50_ms: float | None = None  # one prefilter call, as measured during the evaluation


@dataclasses.dataclass(frozen=True)
class ClassifyReportFiles:
    json: pathlib.Path
    html: pathlib.Path
    confusion_matrix: pathlib.Path
    per_class: pathlib.Path


def render_class_bars(metrics: ClassificationMetrics, title: str = "Per class: precision, recall, F1") -> np.ndarray:
    """BGR image: grouped bars of precision, recall and F1 per class, with the values."""
    n = len(metrics.classes)
    width = max(640, min(1400, 140 + 110 * n + 170))
    height = 460
    left, right, top, bottom = 64, 170, 58, 70
    img = np.full((height * _SS, width * _SS, 3), 255, np.uint8)
    px0, py0 = left * _SS, top * _SS
    pw, ph = (width - left - right) * _SS, (height - top - bottom) * _SS
    for k in range(11):
        v = k / 10
        gy = round(py0 + (1 - v) * ph)
        cv2.line(img, (px0, gy), (px0 + pw, gy), _GRID, _SS, cv2.LINE_AA)
        _put(img, f"{v:.1f}", px0 - 10 * _SS, gy, 0.45, _MUTED, align="right", valign="middle")
    cv2.line(img, (px0, py0 + ph), (px0 + pw, py0 + ph), _INK, _SS, cv2.LINE_AA)
    _put(img, title, px0 + pw / 2, 34 * _SS, 0.7, _INK, thickness=2, align="center")
    _put_vertical(img, "score", 20 * _SS, py0 + ph / 2, 0.6, _INK)
    series = (("precision", 0), ("recall", 1), ("F1", 2))
    group = pw / max(n, 1)
    bar = group * 0.24
    label_scale = 0.5 if max((_text_width(c.name, 0.5) for c in metrics.classes), default=0) < group * 0.95 else 0.4
    for i, c in enumerate(metrics.classes):
        gx = px0 + i * group + (group - 3 * bar) / 2
        for j, value in enumerate((c.precision, c.recall, c.f1)):
            x1 = round(gx + j * bar)
            x2 = round(gx + (j + 1) * bar - 2 * _SS)
            y = round(py0 + (1 - value) * ph)
            cv2.rectangle(img, (x1, y), (x2, py0 + ph), _PALETTE[series[j][1]], -1)
            if n <= 10:
                _put(img, f"{value:.2f}", (x1 + x2) / 2, y - 4 * _SS, 0.33, _INK, align="center")
        _put(img, c.name, px0 + i * group + group / 2, py0 + ph + 12 * _SS, label_scale,
             _INK if c.support else _MUTED, align="center", valign="top")
        _put(img, f"n={c.support}", px0 + i * group + group / 2, py0 + ph + 34 * _SS, 0.4, _MUTED,
             align="center", valign="top")
    lx, ly = (width - right + 24) * _SS, py0 + 8 * _SS
    for j, (name, colour_index) in enumerate(series):
        y = ly + j * 26 * _SS
        cv2.rectangle(img, (lx, y - 7 * _SS), (lx + 22 * _SS, y + 7 * _SS), _PALETTE[colour_index], -1)
        _put(img, name, lx + 32 * _SS, y, 0.5, _INK, valign="middle")
    return _finish(img)


def classification_document(metrics: ClassificationMetrics, ctx: ClassifyEvalContext) -> dict[str, Any]:
    """Everything of one classifier evaluation as plain JSON types."""
    t = ctx.triage
    return {
        "schema": SCHEMA,
        "model": {"id": ctx.model_id, "path": str(ctx.model_path), "task": "classify", "classes": list(metrics.names),
                  "input_size": list(ctx.input_size), "preprocessing": ctx.preprocessing},
        "dataset": {"path": str(ctx.dataset), "split": ctx.split, "images": metrics.samples,
                    "per_class": {c.name: c.support for c in metrics.classes}},
        "timestamps": {"started": ctx.started.isoformat(timespec="seconds"),
                       "finished": ctx.finished.isoformat(timespec="seconds"),
                       "seconds": round((ctx.finished - ctx.started).total_seconds(), 3)},
        "metrics": {"accuracy": _r(metrics.accuracy), "macro_precision": _r(metrics.macro_precision),
                    "macro_recall": _r(metrics.macro_recall), "macro_f1": _r(metrics.macro_f1),
                    "latency_p50_ms": _r(ctx.latency_p50_ms, 3) if ctx.latency_p50_ms is not None else None},
        "classes": [{"id": c.class_id, "name": c.name, "support": c.support, "predicted": c.predicted,
                     "precision": _r(c.precision), "recall": _r(c.recall), "f1": _r(c.f1)} for c in metrics.classes],
        "confusion_matrix": {"labels": list(metrics.names), "rows": "truth", "columns": "predicted",
                             "matrix": [list(row) for row in metrics.confusion_matrix]},
        "triage": None if t is None else {
            "accept": t.accept, "margin": t.margin, "pass_label": t.pass_label, "frames": t.frames,
            "decided": t.decided, "decided_correct": t.decided_correct, "defects_passed": t.defects_passed,
            "uncertain": t.uncertain, "coverage": _r(t.coverage), "decided_accuracy": _r(t.decided_accuracy)},
    }


def classification_report_html(metrics: ClassificationMetrics, ctx: ClassifyEvalContext, cm_png: bytes,
                               bars_png: bytes) -> str:
    e = html.escape
    rows = [f"<tr><td>{e(c.name)}</td><td>{c.support}</td><td>{c.predicted}</td><td>{c.precision:.3f}</td>"
            f"<td>{c.recall:.3f}</td><td>{c.f1:.3f}</td></tr>" for c in metrics.classes]
    present = sum(1 for c in metrics.classes if c.support)
    rows.append(f'<tr class="all"><td>macro mean ({present} classes with frames)</td><td>{metrics.samples}</td>'
                f"<td>{metrics.samples}</td><td>{metrics.macro_precision:.3f}</td><td>{metrics.macro_recall:.3f}</td>"
                f"<td>{metrics.macro_f1:.3f}</td></tr>")
    cards_list = [("accuracy", f"{metrics.accuracy:.3f}"), ("macro F1", f"{metrics.macro_f1:.3f}"),
                  ("images", str(metrics.samples)), ("classes", str(len(metrics.names)))]
    t = ctx.triage
    triage_html = ""
    if t is not None:
        cards_list.append(("decided by prefilter", f"{100 * t.coverage:.1f}%"))
        acc = "–" if t.decided_accuracy is None else f"{t.decided_accuracy:.3f}"
        triage_html = (
            f"<h2>Triage at accept {t.accept:g}, margin {t.margin:g}</h2><p class=note>A frame is decided when its "
            f"top class has probability &ge; {t.accept:g} and leads the runner-up by &ge; {t.margin:g}; the rest are "
            f"uncertain and would be escalated to the VLM.</p><table><tbody>"
            f"<tr><td>decided (no escalation)</td><td>{t.decided} of {t.frames} ({100 * t.coverage:.1f}%)</td></tr>"
            f"<tr><td>right among the decided</td><td>{t.decided_correct} ({acc})</td></tr>"
            f"<tr><td>defect frames decided as {e(t.pass_label)}</td><td>{t.defects_passed}</td></tr>"
            f"<tr><td>uncertain (escalated)</td><td>{t.uncertain}</td></tr></tbody></table>")
    if ctx.latency_p50_ms is not None:
        cards_list.append(("latency p50", f"{ctx.latency_p50_ms:.1f} ms"))
    cards = "".join(f'<div class="card"><div class="k">{k}</div><div class="v">{v}</div></div>' for k, v in cards_list)
    seconds = (ctx.finished - ctx.started).total_seconds()
    prep = ", ".join(f"{k} {v}" for k, v in ctx.preprocessing.items())
    settings = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in (
        ("model", ctx.model_id), ("model file", str(ctx.model_path)),
        ("input", f"{ctx.input_size[0]}x{ctx.input_size[1]}"), ("preprocessing", prep),
        ("dataset", f"{ctx.dataset} (split {ctx.split})"), ("prediction", "top-1 class"),
        ("started", ctx.started.isoformat(timespec="seconds")),
        ("took", f"{seconds:.1f} s ({1000 * seconds / max(metrics.samples, 1):.0f} ms per image)")))
    no_support = [c.name for c in metrics.classes if c.support == 0]
    note = (f"<p class=note>No frames of {e(', '.join(no_support))} in this split: shown, but left out of the "
            "macro means.</p>" if no_support else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Evaluation: {e(ctx.model_id)}</title><style>{_CSS}</style></head>
<body><main>
<h1>Classifier evaluation</h1>
<p class="sub"><code>{e(ctx.model_id)}</code> on <code>{e(str(ctx.dataset))}</code>, split <b>{e(ctx.split)}</b></p>
<div class="cards">{cards}</div>
<h2>Per class</h2>
<table><thead><tr><th>class</th><th>frames</th><th>predicted</th><th>precision</th><th>recall</th><th>F1</th>
</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>{note}
<figure>{_img_tag(bars_png, "per-class precision, recall and F1")}</figure>
<h2>Confusion matrix</h2>
<figure>{_img_tag(cm_png, "confusion matrix")}<figcaption>Rows: true class, columns: the classifier's top-1
class; shade: share of the row.</figcaption></figure>
{triage_html}
<h2>Settings</h2>
<dl>{settings}</dl>
</main></body></html>
"""


def write_classification_report(out_dir: pathlib.Path, metrics: ClassificationMetrics,
                                ctx: ClassifyEvalContext) -> ClassifyReportFiles:
    """Write eval.json, report.html, confusion_matrix.png and per_class.png into ``out_dir``."""
    out_dir = pathlib.Path(out_dir)
    files = ClassifyReportFiles(out_dir / "eval.json", out_dir / "report.html", out_dir / "confusion_matrix.png",
                                out_dir / "per_class.png")
    cm_png = _encode_png(render_confusion_matrix(metrics.confusion_matrix, metrics.names,
                                                 f"Confusion matrix (accuracy {metrics.accuracy:.3f})",
                                                 background=False), "confusion matrix")
    bars_png = _encode_png(render_class_bars(metrics), "per-class")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        files.confusion_matrix.write_bytes(cm_png)
        files.per_class.write_bytes(bars_png)
        files.json.write_text(json.dumps(classification_document(metrics, ctx), indent=1) + "\n")
        files.html.write_text(classification_report_html(metrics, ctx, cm_png, bars_png), encoding="utf-8")
    except OSError as exc:
        raise EdgeAgentError(f"cannot write the report into {out_dir}: {exc.strerror or exc}") from exc
    return files
