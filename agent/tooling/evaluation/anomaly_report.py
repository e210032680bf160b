"""``models eval`` for an anomaly model: the numbers of :mod:`.anomaly_dataset` on a labelled YOLO split, the
recall at a 1 % false-reject rate (the threshold chosen on this split's own good images, beside the model's
threshold), and the text histogram of good vs defective scores; ``eval.json`` and ``report.txt``."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from agent.tooling.evaluation.anomaly import at_threshold, threshold_at_frr
from agent.tooling.evaluation.anomaly_dataset import AnomalyEvaluation

REPORT_FRR = 0.01


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def anomaly_eval_document(ev: AnomalyEvaluation, model_id: str, data: str, split: str) -> dict[str, Any]:
    s, y = np.array(ev.scores), np.array(ev.labels, bool)
    at_model = ev.at_model_threshold
    at_frr = at_threshold(y, s, threshold_at_frr(s[~y], REPORT_FRR)) if (~y).any() else None
    latencies = sorted(ev.latencies_ms)
    return {
        "schema": "edge-agent/anomaly-eval/v1", "model_id": model_id, "data": data, "split": split,
        "images": ev.images, "defective": ev.defective, "image_auroc": ev.image_auroc, "pixel_auroc": ev.pixel_auroc,
        "at_model_threshold": _row(at_model),
        f"at_{REPORT_FRR:.0%}_false_rejects".replace("%", "pct"): None if at_frr is None else _row(at_frr),
        "verdicts": {v: ev.verdicts.count(v) for v in ("pass", "uncertain", "defect")},
        "latency_ms_p50": latencies[len(latencies) // 2] if latencies else None,
        "histogram": ev.histogram(),
    }


def _row(at: Any) -> dict[str, Any]:
    return {"threshold": round(at.threshold, 6), "false_reject_rate": at.false_reject_rate, "recall": at.recall,
            "precision": at.precision}


def anomaly_report_lines(doc: dict[str, Any]) -> list[str]:
    m = doc["at_model_threshold"]
    frr = doc.get("at_1pct_false_rejects")
    lines = [f"{doc['model_id']} on {doc['data']} ({doc['split']}): {doc['images']} images, {doc['defective']} "
             f"with defects",
             f"image AUROC {_f(doc['image_auroc'])}   pixel AUROC (boxes) {_f(doc['pixel_auroc'])}",
             f"at the model's threshold {m['threshold']:.4f}: false-reject rate {m['false_reject_rate']:.3f}, "
             f"recall {_f(m['recall'])}, precision {_f(m['precision'])}"]
    if frr is not None:
        lines.append(f"at 1% false rejects on this split's good images (threshold {frr['threshold']:.4f}): "
                     f"recall {_f(frr['recall'])}, precision {_f(frr['precision'])}")
    v = doc["verdicts"]
    lines.append(f"triage (default band): pass {v['pass']}, uncertain {v['uncertain']} (escalated), "
                 f"defect {v['defect']}")
    return lines + ["", *doc["histogram"]]


def write_anomaly_report(out_dir: pathlib.Path, doc: dict[str, Any]) -> list[pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out_dir / "report.txt").write_text("\n".join(anomaly_report_lines(doc)) + "\n")
    return [out_dir / "eval.json", out_dir / "report.txt"]
