"""The cascade evaluation report of ``edge-agent tag --labels``: ``cascade-eval.json`` (every number),
``cascade-report.html`` (one self-contained page) and its chart ``cascade-f1.png`` (F1 and escalation rate
per strategy), drawn with the model evaluation report's helpers."""

from __future__ import annotations

import dataclasses
import html
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agent.errors import EdgeAgentError
from agent.tooling.evaluation.cascade import STRATEGIES, STRATEGY_TITLES, StrategyResult
from agent.tooling.evaluation.report import _CSS, _INK, _MUTED, _PALETTE, _SS, _encode_png, _finish, _img_tag, _put

SCHEMA = "edge-agent/eval-cascade/1"
PREFILTER_RULE = ("prefilter alone: an uncertain image is decided at the reject threshold: every tag the triage "
                  "kept (confidence >= reject) counts as a defect of its class")


@dataclasses.dataclass(frozen=True)
class CascadeEvalContext:
    model_id: str
    labels: pathlib.Path
    output: pathlib.Path
    accept: float
    reject: float
    gateway: str | None
    items: int  # items in the output
    unlabelled: int  # items no label names (left out)
    classes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CascadeReportFiles:
    json: pathlib.Path
    html: pathlib.Path
    chart: pathlib.Path


def cascade_document(results: Sequence[StrategyResult], ctx: CascadeEvalContext) -> dict[str, Any]:
    by_name = {r.name: r for r in results}
    return {
        "schema": SCHEMA,
        "model": ctx.model_id,
        "classes": list(ctx.classes),
        "labels": str(ctx.labels),
        "output": str(ctx.output),
        "triage": {"accept": ctx.accept, "reject": ctx.reject},
        "gateway": ctx.gateway,
        "images": {"items": ctx.items, "evaluated": ctx.items - ctx.unlabelled, "unlabelled": ctx.unlabelled},
        "rules": {"prefilter": PREFILTER_RULE,
                  "cascade": "the verdicts tag published; images left uncertain use the prefilter rule",
                  "vlm": "the VLM asked about every image; where it gives no verdict, the prefilter rule"},
        "strategies": {name: (by_name[name].to_json() if name in by_name else
                              {"title": STRATEGY_TITLES[name], "run": False,
                               "reason": "no escalation.gateway in the config"})
                       for name in STRATEGIES},
    }


def render_chart(results: Sequence[StrategyResult]) -> np.ndarray:
    """Grouped bars per strategy: defect F1, macro F1 over classes, escalation rate."""
    import cv2

    width, height = 760, 380
    left, top, bottom = 60, 56, 60
    img = np.full((height * _SS, width * _SS, 3), 255, np.uint8)
    x0, y0 = left * _SS, top * _SS
    pw, ph = (width - left - 20) * _SS, (height - top - bottom) * _SS
    _put(img, "F1 and escalation rate per strategy", width * _SS / 2, 30 * _SS, 0.6, _INK, thickness=2,
         align="center")
    for k in range(6):
        v = k / 5
        y = round(y0 + (1 - v) * ph)
        cv2.line(img, (x0, y), (x0 + pw, y), (228, 228, 228), _SS)
        _put(img, f"{v:.1f}", x0 - 8 * _SS, y, 0.45, _MUTED, align="right", valign="middle")
    series = (("defect F1", 0), ("macro F1", 1), ("escalated", 3))
    group = pw / max(len(results), 1)
    bar = group / (len(series) + 1)
    for g, r in enumerate(results):
        values = (r.defect.f1, r.macro_f1, r.escalation_rate)
        for s, ((_name, colour), value) in enumerate(zip(series, values, strict=True)):
            bx = x0 + g * group + bar * (s + 0.5)
            if value is None:
                continue
            top_y = y0 + (1 - value) * ph
            cv2.rectangle(img, (round(bx), round(top_y)), (round(bx + bar * 0.9), y0 + ph), _PALETTE[colour], -1)
            _put(img, f"{value:.2f}", bx + bar * 0.45, top_y - 4 * _SS, 0.4, _INK, align="center")
        _put(img, STRATEGY_TITLES.get(r.name, r.name), x0 + g * group + group / 2, y0 + ph + 10 * _SS, 0.5, _INK,
             align="center", valign="top")
    lx = x0
    for name, colour in series:
        cv2.rectangle(img, (round(lx), (height - 22) * _SS), (round(lx + 14 * _SS), (height - 10) * _SS),
                      _PALETTE[colour], -1)
        w, _ = _put(img, name, lx + 20 * _SS, (height - 16) * _SS, 0.45, _INK, valign="middle")
        lx += w + 44 * _SS
    return _finish(img)


def _class_rows(results: Sequence[StrategyResult], classes: Sequence[str], cell: Callable[[float | None], str]
                ) -> list[str]:
    """One table row per class: its images, then precision, recall and F1 of each strategy."""
    by_name = {r.name: r for r in results}
    rows = []
    for c in classes:
        support = results[0].classes[c].support if results else 0
        cells = ""
        for n in STRATEGIES:
            if n not in by_name:
                cells += '<td class="na" colspan="3">not run</td>'
                continue
            s = by_name[n].classes[c]
            cells += cell(s.precision) + cell(s.recall) + cell(s.f1)
        rows.append(f"<tr><td>{html.escape(c)}</td><td>{support}</td>{cells}</tr>")
    return rows


def cascade_html(results: Sequence[StrategyResult], ctx: CascadeEvalContext, chart_png: bytes) -> str:
    e = html.escape

    def cell(v: float | None) -> str:
        return '<td class="na">–</td>' if v is None else f"<td>{v:.3f}</td>"

    by_name = {r.name: r for r in results}
    head = "".join(f"<th>{e(STRATEGY_TITLES[n])}</th>" for n in STRATEGIES)
    rows = []
    picks: tuple[tuple[str, Callable[[StrategyResult], float | None]], ...] = (
                        ("escalation rate", lambda r: r.escalation_rate),
                        ("defect precision", lambda r: r.defect.precision),
                        ("defect recall", lambda r: r.defect.recall), ("defect F1", lambda r: r.defect.f1),
                        ("macro F1 (classes)", lambda r: r.macro_f1))
    for label, pick in picks:
        cls = ' class="all"' if label == "defect F1" else ""
        rows.append(f"<tr{cls}><td>{e(label)}</td>" + "".join(
            cell(pick(by_name[n])) if n in by_name else '<td class="na">not run</td>' for n in STRATEGIES)
            + "</tr>")
    class_rows = _class_rows(results, ctx.classes, cell)
    sub = "".join(f"<th>{x}</th>" for n in STRATEGIES for x in ("P", "R", "F1"))
    group_head = "".join(f'<th colspan="3">{e(STRATEGY_TITLES[n])}</th>' for n in STRATEGIES)
    settings = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in (
        ("model", ctx.model_id), ("labels", str(ctx.labels)), ("output", str(ctx.output)),
        ("triage band", f"accept {ctx.accept:g}, reject {ctx.reject:g}"),
        ("gateway", ctx.gateway or "none (VLM on every image not run)"),
        ("images", f"{ctx.items - ctx.unlabelled} evaluated, {ctx.unlabelled} without a label left out")))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Cascade evaluation: {e(ctx.model_id)}</title><style>{_CSS}</style></head>
<body><main>
<h1>Cascade evaluation</h1>
<p class="sub"><code>{e(ctx.model_id)}</code> against <code>{e(str(ctx.labels))}</code></p>
<h2>Pass / defect</h2>
<table><thead><tr><th></th>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<p class="note">Image level, defect is the positive class. {e(PREFILTER_RULE)}. Cascade: the verdicts tag
published; images left uncertain use the prefilter rule. VLM on every image: every image asked; where the VLM gives
no verdict, the prefilter rule. Escalation rate: the share of images the strategy escalates (the cascade: its
uncertain images, as tag's summary counts them, whether a gateway answered or not).</p>
<figure>{_img_tag(chart_png, "F1 and escalation rate per strategy")}</figure>
<h2>Per class (does the image carry the class)</h2>
<table><thead><tr><th rowspan="2">class</th><th rowspan="2">images</th>{group_head}</tr>
<tr>{sub}</tr></thead><tbody>
{chr(10).join(class_rows)}
</tbody></table>
<h2>Settings</h2>
<dl>{settings}</dl>
</main></body></html>
"""


def write_cascade_report(out_dir: pathlib.Path, results: Sequence[StrategyResult],
                         ctx: CascadeEvalContext) -> CascadeReportFiles:
    """Write cascade-eval.json, cascade-report.html and cascade-f1.png into ``out_dir``."""
    files = CascadeReportFiles(out_dir / "cascade-eval.json", out_dir / "cascade-report.html",
                               out_dir / "cascade-f1.png")
    chart = _encode_png(render_chart(results), "cascade F1")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        files.chart.write_bytes(chart)
        files.json.write_text(json.dumps(cascade_document(results, ctx), indent=1) + "\n")
        files.html.write_text(cascade_html(results, ctx, chart), encoding="utf-8")
    except OSError as exc:
        raise EdgeAgentError(f"cannot write the evaluation report into {out_dir}: {exc.strerror or exc}") from exc
    return files


def table_lines(results: Sequence[StrategyResult]) -> list[str]:
    """The summary printed at the end of ``tag --labels``."""
    by_name = {r.name: r for r in results}
    out = [f"{'strategy':<20} {'escalated':>9} {'precision':>9} {'recall':>7} {'F1':>6} {'macro F1':>8}"]

    def f(v: float | None, w: int) -> str:
        return f"{'–' if v is None else f'{v:.3f}':>{w}}"

    for n in STRATEGIES:
        r = by_name.get(n)
        if r is None:
            out.append(f"{STRATEGY_TITLES[n]:<20} not run (no escalation.gateway in the config)")
            continue
        out.append(f"{STRATEGY_TITLES[n]:<20} {100 * r.escalation_rate:>8.1f}% {f(r.defect.precision, 9)} "
                   f"{f(r.defect.recall, 7)} {f(r.defect.f1, 6)} {f(r.macro_f1, 8)}")
    return out
