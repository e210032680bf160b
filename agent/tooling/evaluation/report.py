"""The evaluation report: ``eval.json`` (every number), ``report.html`` (one
self-contained page: inline CSS, charts embedded as base64 PNG) and the charts
as files (``pr_curves.png``, ``confusion_matrix.png``).

Charts are drawn with OpenCV (matplotlib is not a runtime dependency), at twice
the size and shrunk with area averaging, so lines and text come out smooth.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from agent.errors import EdgeAgentError
from agent.tooling.evaluation.detection import DetectionMetrics

SCHEMA = "edge-agent/eval-detection/1"

_SS = 2  # supersampling factor
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_INK = (40, 40, 40)
_MUTED = (110, 110, 110)
_GRID = (228, 228, 228)
# matplotlib's tab10, in BGR
_PALETTE = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
            (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]
_LEGEND_MAX = 12  # more classes than this: grey lines, no per-class legend


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """What was evaluated, and how."""

    model_id: str
    model_path: pathlib.Path
    dataset: pathlib.Path
    split: str
    min_score: float  # predictions kept at or above this confidence (ultralytics val: 0.001)
    nms_iou: float
    max_detections: int
    started: datetime.datetime
    finished: datetime.datetime
    input_size: tuple[int, int] | None = None  # model input (width, height)


@dataclasses.dataclass(frozen=True)
class ReportFiles:
    json: pathlib.Path
    html: pathlib.Path
    pr_curves: pathlib.Path
    confusion_matrix: pathlib.Path


# -- drawing helpers (all coordinates in supersampled pixels) ------------------------------------------


def _put(img: np.ndarray, text: str, x: float, y: float, scale: float, color: tuple[int, int, int],
         thickness: int = 1, align: str = "left", valign: str = "baseline") -> tuple[int, int]:
    """Draw ``text``; x is its left/centre/right, y its baseline/middle/top. Returns its (width, height)."""
    s, t = scale * _SS, max(1, thickness * _SS)
    (w, h), _base = cv2.getTextSize(text, _FONT, s, t)
    ox = x - (w / 2 if align == "center" else w if align == "right" else 0)
    oy = y + (h / 2 if valign == "middle" else h if valign == "top" else 0)
    cv2.putText(img, text, (round(ox), round(oy)), _FONT, s, color, t, cv2.LINE_AA)
    return w, h


def _put_vertical(img: np.ndarray, text: str, cx: float, cy: float, scale: float,
                  color: tuple[int, int, int], thickness: int = 1) -> None:
    """Text rotated 90 degrees counter-clockwise (reads bottom to top), centred on (cx, cy)."""
    s, t = scale * _SS, max(1, thickness * _SS)
    (w, h), base = cv2.getTextSize(text, _FONT, s, t)
    flat = np.full((h + base + 4, w + 4, 3), 255, np.uint8)
    cv2.putText(flat, text, (2, h + 2), _FONT, s, color, t, cv2.LINE_AA)
    tile = cv2.rotate(flat, cv2.ROTATE_90_COUNTERCLOCKWISE)
    th, tw = tile.shape[:2]
    x0, y0 = round(cx - tw / 2), round(cy - th / 2)
    x1, y1 = max(x0, 0), max(y0, 0)
    x2, y2 = min(x0 + tw, img.shape[1]), min(y0 + th, img.shape[0])
    if x2 > x1 and y2 > y1:
        region = img[y1:y2, x1:x2]
        np.minimum(region, tile[y1 - y0:y2 - y0, x1 - x0:x2 - x0], out=region)


def _text_width(text: str, scale: float, thickness: int = 1) -> int:
    return int(cv2.getTextSize(text, _FONT, scale * _SS, max(1, thickness * _SS))[0][0])


def _finish(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (w // _SS, h // _SS), interpolation=cv2.INTER_AREA)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


# -- PR curves --------------------------------------------------------------------------------------------


def render_pr_curves(metrics: DetectionMetrics, title: str = "Precision-recall at IoU 0.5") -> np.ndarray:
    """BGR image: one PR curve per class with ground truth, their mean, legend with AP50."""
    width, height = 980, 620
    left, right, top, bottom = 86, 270, 58, 70
    img = np.full((height * _SS, width * _SS, 3), 255, np.uint8)
    px0, py0 = left * _SS, top * _SS
    pw, ph = (width - left - right) * _SS, (height - top - bottom) * _SS

    def to_px(r: np.ndarray, p: np.ndarray) -> np.ndarray:
        return np.stack([px0 + r * pw, py0 + (1 - p) * ph], axis=1)

    for k in range(11):  # grid and ticks every 0.1
        v = k / 10
        gx, gy = round(px0 + v * pw), round(py0 + (1 - v) * ph)
        cv2.line(img, (gx, py0), (gx, py0 + ph), _GRID, _SS, cv2.LINE_AA)
        cv2.line(img, (px0, gy), (px0 + pw, gy), _GRID, _SS, cv2.LINE_AA)
        cv2.line(img, (gx, py0 + ph), (gx, py0 + ph + 6 * _SS), _INK, _SS, cv2.LINE_AA)
        cv2.line(img, (px0 - 6 * _SS, gy), (px0, gy), _INK, _SS, cv2.LINE_AA)
        _put(img, f"{v:.1f}", gx, py0 + ph + 12 * _SS, 0.45, _MUTED, valign="top", align="center")
        _put(img, f"{v:.1f}", px0 - 10 * _SS, gy, 0.45, _MUTED, align="right", valign="middle")
    cv2.rectangle(img, (px0, py0), (px0 + pw, py0 + ph), _INK, _SS, cv2.LINE_AA)
    _put(img, "Recall", px0 + pw / 2, (height - 14) * _SS, 0.6, _INK, align="center")
    _put_vertical(img, "Precision", 22 * _SS, py0 + ph / 2, 0.6, _INK)
    _put(img, title, px0 + pw / 2, 34 * _SS, 0.7, _INK, thickness=2, align="center")

    recall = np.asarray(metrics.pr_recall)
    evaluated = metrics.evaluated
    legend: list[tuple[str, tuple[int, int, int], int]] = []
    many = len(evaluated) > _LEGEND_MAX
    for i, c in enumerate(evaluated):
        color = (170, 170, 170) if many else _PALETTE[i % len(_PALETTE)]
        pts = to_px(recall, np.asarray(c.pr_precision))
        cv2.polylines(img, [np.round(pts).astype(np.int32)], False, color, 2 * _SS, cv2.LINE_AA)
        if not many:
            legend.append((f"{c.name}  {_fmt(c.ap50)}", color, 2))
    if evaluated:
        mean = np.mean([np.asarray(c.pr_precision) for c in evaluated], axis=0)
        pts = to_px(recall, mean)
        cv2.polylines(img, [np.round(pts).astype(np.int32)], False, _INK, 4 * _SS, cv2.LINE_AA)
        legend.append((f"all classes  {metrics.map50:.3f} mAP50", _INK, 4))
    else:
        _put(img, "no ground truth in this split", px0 + pw / 2, py0 + ph / 2, 0.7, _MUTED, align="center",
             valign="middle")

    lx, ly = (width - right + 24) * _SS, py0 + 8 * _SS
    row = 26 * _SS
    if legend:
        box_h = row * len(legend) + 44 * _SS
        cv2.rectangle(img, (lx - 12 * _SS, ly - 10 * _SS), ((width - 12) * _SS, ly + box_h - 10 * _SS),
                      (205, 205, 205), _SS, cv2.LINE_AA)
        _put(img, "class  AP50", lx, ly + 6 * _SS, 0.5, _MUTED, valign="top")
        for j, (label, color, thick) in enumerate(legend):
            y = ly + 40 * _SS + j * row
            cv2.line(img, (lx, y), (lx + 28 * _SS, y), color, thick * _SS, cv2.LINE_AA)
            _put(img, label, lx + 38 * _SS, y, 0.5, _INK, thickness=2 if thick > 2 else 1, valign="middle")
    if many:
        _put(img, f"{len(evaluated)} classes (grey)", lx, ly + box_h + 10 * _SS if legend else ly, 0.5, _MUTED,
             valign="top")
    return _finish(img)


# -- confusion matrix ------------------------------------------------------------------------------------


def _shade(fraction: float) -> tuple[int, int, int]:
    """White (0) to deep blue (1), BGR."""
    lo, hi = np.array([252, 248, 244], np.float64), np.array([107, 48, 8], np.float64)
    f = min(max(fraction, 0.0), 1.0) ** 0.8
    return tuple(int(v) for v in np.round(lo + (hi - lo) * f))  # type: ignore[return-value]


def render_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str,
                            background: bool = True) -> np.ndarray:
    """BGR image of a count matrix, rows truth, columns predicted; shade = share of the row.
    ``background``: the last label is the detector's background (its own cell is not counted)."""
    m = np.asarray(matrix, np.int64)
    n = len(labels)
    if m.shape != (n, n):
        raise ValueError(f"matrix: expected shape ({n}, {n}) for {n} labels, got shape {m.shape}")
    cell = int(max(46, min(96, 620 // max(n, 1))))
    label_w = max(_text_width(x, 0.5) for x in labels) // _SS + 16
    col_label_vertical = label_w - 16 > cell - 8
    col_label_h = (label_w if col_label_vertical else 24)
    left = 44 + label_w
    top = 64
    grid = cell * n
    bar_w = 90
    width = left + grid + bar_w + 20
    height = top + grid + col_label_h + 48
    img = np.full((height * _SS, width * _SS, 3), 255, np.uint8)
    x0, y0, c = left * _SS, top * _SS, cell * _SS
    row_sums = m.sum(1)
    big = 0.55 if cell >= 60 else 0.45
    for i in range(n):
        for j in range(n):
            frac = m[i, j] / row_sums[i] if row_sums[i] else 0.0
            p1 = (x0 + j * c, y0 + i * c)
            p2 = (x0 + (j + 1) * c, y0 + (i + 1) * c)
            cx, cy = x0 + j * c + c / 2, y0 + i * c + c / 2
            if background and i == n - 1 and j == n - 1:  # background vs background is not counted
                cv2.rectangle(img, p1, p2, (238, 238, 238), -1)
                _put(img, "n/a", cx, cy, 0.4, _MUTED, align="center", valign="middle")
                continue
            cv2.rectangle(img, p1, p2, _shade(frac), -1)
            ink = _WHITE if frac > 0.55 else _INK
            if cell >= 60 and m[i, j]:
                _put(img, str(m[i, j]), cx, cy - 6 * _SS, big, ink, thickness=2, align="center", valign="middle")
                _put(img, f"{100 * frac:.0f}%", cx, cy + 14 * _SS, 0.38, ink, align="center", valign="middle")
            else:
                _put(img, str(m[i, j]), cx, cy, big, ink if m[i, j] else (190, 190, 190),
                     thickness=2 if m[i, j] else 1, align="center", valign="middle")
    for k in range(n + 1):  # cell borders
        cv2.line(img, (x0, y0 + k * c), (x0 + n * c, y0 + k * c), _WHITE, _SS)
        cv2.line(img, (x0 + k * c, y0), (x0 + k * c, y0 + n * c), _WHITE, _SS)
    cv2.rectangle(img, (x0, y0), (x0 + n * c, y0 + n * c), (200, 200, 200), _SS)
    for i, name in enumerate(labels):
        color = _MUTED if background and i == n - 1 else _INK
        _put(img, name, x0 - 8 * _SS, y0 + i * c + c / 2, 0.5, color, align="right", valign="middle")
        if col_label_vertical:
            tw = _text_width(name, 0.5)
            _put_vertical(img, name, x0 + i * c + c / 2, y0 + n * c + 8 * _SS + tw / 2, 0.5, color)
        else:
            _put(img, name, x0 + i * c + c / 2, y0 + n * c + 8 * _SS, 0.5, color, align="center", valign="top")
    _put(img, "Predicted", x0 + n * c / 2, (height - 14) * _SS, 0.6, _INK, align="center")
    _put_vertical(img, "True", 18 * _SS, y0 + n * c / 2, 0.6, _INK)
    _put(img, title, width * _SS / 2, 30 * _SS, 0.6, _INK, thickness=2, align="center")
    _colour_bar(img, x0 + n * c + 24 * _SS, y0, n * c)
    return _finish(img)


def _colour_bar(img: np.ndarray, bx: int, y0: int, size: int) -> None:
    """The shade scale beside the matrix: the share of the row, 100 % at the top."""
    bw = 16 * _SS
    for k in range(size):
        cv2.line(img, (bx, y0 + k), (bx + bw, y0 + k), _shade(1 - k / size), 1)
    cv2.rectangle(img, (bx, y0), (bx + bw, y0 + size), (200, 200, 200), _SS)
    for v in (0.0, 0.5, 1.0):
        _put(img, f"{int(v * 100)}%", bx + bw + 6 * _SS, y0 + (1 - v) * size, 0.4, _MUTED, valign="middle")
    _put_vertical(img, "share of the row", bx + bw + 54 * _SS, y0 + size / 2, 0.4, _MUTED)


def _encode_png(image: np.ndarray, what: str) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise EdgeAgentError(f"could not encode the {what} chart as PNG")
    return bytes(buf.tobytes())


# -- eval.json ---------------------------------------------------------------------------------------------


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def eval_document(metrics: DetectionMetrics, ctx: EvalContext) -> dict[str, Any]:
    """Everything of one evaluation as plain JSON types."""
    return {
        "schema": SCHEMA,
        "model": {"id": ctx.model_id, "path": str(ctx.model_path), "classes": list(metrics.names),
                  "input_size": list(ctx.input_size) if ctx.input_size else None},
        "dataset": {"path": str(ctx.dataset), "split": ctx.split, "images": metrics.images,
                    "objects": sum(c.gt_count for c in metrics.classes)},
        "settings": {"min_score": ctx.min_score, "nms_iou": ctx.nms_iou, "max_detections": ctx.max_detections,
                     "match_iou_thresholds": list(metrics.iou_thresholds),
                     "ap_method": "101-point interpolated envelope, trapezoidal (ultralytics 8.4 compute_ap)"},
        "timestamps": {"started": ctx.started.isoformat(timespec="seconds"),
                       "finished": ctx.finished.isoformat(timespec="seconds"),
                       "seconds": round((ctx.finished - ctx.started).total_seconds(), 3)},
        "metrics": {
            "mAP50": _r(metrics.map50), "mAP50-95": _r(metrics.map50_95),
            "precision": _r(metrics.precision), "recall": _r(metrics.recall), "f1": _r(metrics.f1),
            "confidence": _r(metrics.confidence), "classes_evaluated": len(metrics.evaluated),
        },
        "classes": [
            {"id": c.class_id, "name": c.name, "gt_count": c.gt_count, "predictions_at_confidence": c.predictions,
             "precision": _r(c.precision), "recall": _r(c.recall), "f1": _r(c.f1), "ap50": _r(c.ap50),
             "ap50_95": _r(c.ap50_95), "ap_per_iou": [_r(v) for v in c.ap]}
            for c in metrics.classes
        ],
        "confusion_matrix": {"labels": list(metrics.matrix_labels), "rows": "truth", "columns": "predicted",
                             "confidence": _r(metrics.confusion_confidence), "iou": metrics.confusion_iou,
                             "matrix": [list(row) for row in metrics.confusion_matrix]},
        "pr_curves": {"iou": metrics.iou_thresholds[0], "recall": [_r(v, 4) for v in metrics.pr_recall],
                      "precision": {c.name: [_r(v, 4) for v in c.pr_precision] for c in metrics.evaluated}},
    }


# -- report.html ------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#f6f7f9}
main{max-width:1040px;margin:0 auto;padding:28px 24px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:32px 0 10px}
.sub{color:#666;margin:0 0 20px}.sub code{font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #e3e5e8;border-radius:8px;padding:12px 16px;min-width:120px}
.card .v{font-size:24px;font-weight:600}.card .k{color:#666;font-size:12px;text-transform:uppercase}
table{border-collapse:collapse;background:#fff;border:1px solid #e3e5e8;border-radius:8px}
th,td{padding:7px 14px;text-align:right;border-bottom:1px solid #eef0f2}
th{background:#fafbfc;font-weight:600;color:#444}td:first-child,th:first-child{text-align:left}
tr.all td{font-weight:600;border-top:2px solid #d9dce0}td.na{color:#999}
figure{margin:0;background:#fff;border:1px solid #e3e5e8;border-radius:8px;padding:12px;display:inline-block}
figure img{max-width:100%;height:auto;display:block}figcaption{color:#666;font-size:12.5px;margin-top:6px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;background:#fff;border:1px solid #e3e5e8;
border-radius:8px;padding:12px 16px}dt{color:#666}dd{margin:0;word-break:break-all}
.note{color:#666;font-size:12.5px;max-width:820px}
"""


def _img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def report_html(metrics: DetectionMetrics, ctx: EvalContext, pr_png: bytes, cm_png: bytes) -> str:
    e = html.escape

    def cell(v: float | None) -> str:
        return '<td class="na">–</td>' if v is None else f"<td>{v:.3f}</td>"

    rows = []
    for c in metrics.classes:
        rows.append(f"<tr><td>{e(c.name)}</td><td>{c.gt_count}</td><td>{c.predictions}</td>"
                    + "".join(cell(v) for v in (c.precision, c.recall, c.f1, c.ap50, c.ap50_95)) + "</tr>")
    rows.append(f'<tr class="all"><td>all ({len(metrics.evaluated)} with ground truth)</td>'
                f"<td>{sum(c.gt_count for c in metrics.classes)}</td>"
                f"<td>{sum(c.predictions for c in metrics.classes)}</td>"
                + "".join(cell(v) for v in (metrics.precision, metrics.recall, metrics.f1, metrics.map50,
                                            metrics.map50_95)) + "</tr>")
    cards = "".join(f'<div class="card"><div class="k">{k}</div><div class="v">{v}</div></div>' for k, v in (
        ("mAP50", f"{metrics.map50:.3f}"), ("mAP50-95", f"{metrics.map50_95:.3f}"),
        ("precision", f"{metrics.precision:.3f}"), ("recall", f"{metrics.recall:.3f}"),
        ("confidence", f"{metrics.confidence:.3f}"), ("images", str(metrics.images)),
        ("objects", str(sum(c.gt_count for c in metrics.classes)))))
    seconds = (ctx.finished - ctx.started).total_seconds()
    settings = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in (
        ("model", ctx.model_id), ("model file", str(ctx.model_path)),
        ("input", f"{ctx.input_size[0]}x{ctx.input_size[1]}" if ctx.input_size else "?"),
        ("dataset", f"{ctx.dataset} (split {ctx.split})"),
        ("predictions", f"confidence > {ctx.min_score:g}, NMS IoU {ctx.nms_iou:g}, at most {ctx.max_detections} "
                        "per image"),
        ("matching", "IoU 0.50:0.05:0.95, greedy by descending score, one prediction per object"),
        ("started", ctx.started.isoformat(timespec="seconds")),
        ("took", f"{seconds:.1f} s ({1000 * seconds / max(metrics.images, 1):.0f} ms per image)")))
    no_gt = [c.name for c in metrics.classes if c.gt_count == 0]
    no_gt_note = (f"<p class=note>No ground truth for {e(', '.join(no_gt))}: shown, but left out of the means.</p>"
                  if no_gt else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Evaluation: {e(ctx.model_id)}</title><style>{_CSS}</style></head>
<body><main>
<h1>Detector evaluation</h1>
<p class="sub"><code>{e(ctx.model_id)}</code> on <code>{e(str(ctx.dataset))}</code>, split <b>{e(ctx.split)}</b></p>
<div class="cards">{cards}</div>
<h2>Per class</h2>
<table><thead><tr><th>class</th><th>objects</th><th>predicted</th><th>precision</th><th>recall</th><th>F1</th>
<th>AP50</th><th>AP50-95</th></tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
<p class="note">Precision, recall and F1 at confidence {metrics.confidence:.3f}, where the mean F1 over classes is
highest; "predicted" counts predictions at or above it. AP: 101-point interpolated precision envelope, as
ultralytics computes it (a perfect class scores 0.995).</p>{no_gt_note}
<h2>Precision-recall curves (IoU 0.5)</h2>
<figure>{_img_tag(pr_png, "precision-recall curves")}</figure>
<h2>Confusion matrix</h2>
<figure>{_img_tag(cm_png, "confusion matrix")}<figcaption>Rows: true class, columns: predicted class, at
confidence &ge; {metrics.confusion_confidence:.3f} and IoU &ge; {metrics.confusion_iou:g}. Background row: predictions
on nothing; background column: objects that were missed.</figcaption></figure>
<h2>Settings</h2>
<dl>{settings}</dl>
</main></body></html>
"""


def write_detection_report(out_dir: pathlib.Path, metrics: DetectionMetrics, ctx: EvalContext) -> ReportFiles:
    """Write eval.json, report.html, pr_curves.png and confusion_matrix.png into ``out_dir``."""
    out_dir = pathlib.Path(out_dir)
    files = ReportFiles(out_dir / "eval.json", out_dir / "report.html", out_dir / "pr_curves.png",
                        out_dir / "confusion_matrix.png")
    pr_png = _encode_png(render_pr_curves(metrics), "precision-recall")
    title = f"Confusion matrix (conf >= {metrics.confusion_confidence:.3f}, IoU >= {metrics.confusion_iou:g})"
    cm_png = _encode_png(render_confusion_matrix(metrics.confusion_matrix, metrics.matrix_labels, title),
                         "confusion matrix")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        files.pr_curves.write_bytes(pr_png)
        files.confusion_matrix.write_bytes(cm_png)
        files.json.write_text(json.dumps(eval_document(metrics, ctx), indent=1) + "\n")
        files.html.write_text(report_html(metrics, ctx, pr_png, cm_png), encoding="utf-8")
    except OSError as exc:
        raise EdgeAgentError(f"cannot write the report into {out_dir}: {exc.strerror or exc}") from exc
    return files
