#!/usr/bin/env python3
"""The anomaly prefilter live: ``edge-agent run`` on a synthetic camera with the gateway and a simulated VLM.

    .venv/bin/python scripts/live_anomaly.py --model models/surface-anomaly.int8.onnx --scene surface \\
        [--frames 200] [--seed 301] [--error-rate 0.05] [--pass-below 0.4] [--defect-at 0.7]

The camera is ``synthetic://SCENE?seed=SEED&fps=0&frames=FRAMES`` (a seed no model was trained on). The agent runs
the anomaly model with the band ``--pass-below`` / ``--defect-at`` (``triage.anomaly``; default 0.4 / 0.7) and
escalates the uncertain frames through a real ``edge-agent gateway`` to the fake Ollama, which answers from the
scene's ground truth and is wrong on ``--error-rate`` of the frames it is asked about (``tests.fakes.vlm_oracle``):
a **stated simulation, not a claim about LLaVA**. Printed, against the ground truth of every frame (positive class:
defect): the escalation rate, the F1 of defect and of pass over all frames, and the same for the frames the
prefilter decided alone. Reuses scripts/day_zero_parts.py's services (Mosquitto, the gateway, the subscriber).
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import day_zero_parts as day_zero  # noqa: E402

from agent.capture.scenes import get_scene  # noqa: E402
from tests.fakes.vlm_oracle import TruthOracle  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=pathlib.Path, required=True, help="the anomaly model (ONNX)")
    parser.add_argument("--scene", default="surface", help="conveyor or surface")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--seed", type=int, default=301, help="the camera's seed (the models trained on 7)")
    parser.add_argument("--error-rate", type=float, default=0.05, help="the simulated VLM's error rate")
    parser.add_argument("--pass-below", type=float, default=0.4, help="triage.anomaly.pass_below")
    parser.add_argument("--defect-at", type=float, default=0.7, help="triage.anomaly.defect_at")
    return parser.parse_args(argv)


def write_config(work: pathlib.Path, args: argparse.Namespace, broker_url: str, gateway: str) -> pathlib.Path:
    doc = {
        "device_id": "box1", "model": {"path": "models/line.onnx", "intra_op_threads": 1},
        "cameras": [{"id": "line3", "source": f"synthetic://{args.scene}?seed={args.seed}&fps=0&frames={args.frames}"}],
        "mqtt": {"url": broker_url, "stats_interval_s": 0}, "metrics": {"enabled": False},
        "outbox": {"path": "state/outbox.db"},
        "triage": {"anomaly": {"pass_below": args.pass_below, "defect_at": args.defect_at}},
        # every escalation let through, no near-duplicate reuse: what is measured is the prefilter's share
        "escalation": {"gateway": gateway, "rate_per_camera": {"per_minute": 60_000, "burst": 1000},
                       "dedupe": {"enabled": False}},
    }
    path = work / "agent.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scene = get_scene(args.scene)
    stream = scene.stream(args.seed)
    images, truths = [], []
    for _ in range(args.frames):
        image, truth = stream.next_frame()
        images.append(image)
        truths.append(frozenset(d.label for d in truth.defects))
    oracle = TruthOracle(images, truths, scene.classes, error_rate=args.error_rate, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="live-anomaly-") as tmp:
        work = pathlib.Path(tmp)
        (work / "models").mkdir()
        (work / "state").mkdir()
        shutil.copyfile(args.model, work / "models" / "line.onnx")
        labels = [{"label": n, "code": f"D-{i + 1:02d}", "severity": "medium"} for i, n in enumerate(scene.classes)]
        (work / "taxonomy.yaml").write_text(yaml.safe_dump({"version": 1, "labels": labels}))
        with day_zero.services(work, oracle) as svc:
            docs, _out = day_zero.run_agent(work, write_config(work, args, svc.broker.url, svc.gateway), svc.broker)
    report(args, docs, truths, oracle)
    return 0


def report(args: argparse.Namespace, docs: list[dict[str, Any]], truths: list[frozenset[str]],
           oracle: TruthOracle) -> None:
    escalated = [d for d in docs if d["escalation"]["status"] != "not_needed"]
    decided = [d for d in docs if d["escalation"]["status"] == "not_needed"]
    whole, alone = day_zero.score(docs, truths), day_zero.score(decided, truths)
    defects = sum(bool(truths[d["sequence"] - 1]) for d in docs)
    print(f"SIMULATION: the VLM is the fake Ollama answering from the ground truth, wrong on "
          f"{100 * args.error_rate:g}% of the frames it is asked about ({oracle.wrong} of {oracle.asked} here)")
    print(f"model {args.model.name} on synthetic://{args.scene}?seed={args.seed}, band pass below "
          f"{args.pass_below:g}, defect from {args.defect_at:g}: {len(docs)} events ({defects} frames with defects)")
    print(f"escalated {len(escalated)} ({100 * len(escalated) / max(1, len(docs)):.1f}%); statuses: "
          + ", ".join(f"{s} {sum(d['escalation']['status'] == s for d in docs)}"
                      for s in sorted({d['escalation']['status'] for d in docs})))
    print(f"all frames (cascade): defect F1 {whole.f1:.3f} (precision {whole.precision:.3f}, recall "
          f"{whole.recall:.3f}), pass F1 {whole.pass_f1:.3f}")
    print(f"decided by the prefilter alone ({len(decided)} frames): defect F1 {alone.f1:.3f} (precision "
          f"{alone.precision:.3f}, recall {alone.recall:.3f}), pass F1 {alone.pass_f1:.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
