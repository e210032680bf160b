#!/usr/bin/env python3
"""Sweep the triage band and print F1 against escalation rate: prefilter alone, the cascade, VLM on everything.

    .venv/bin/python scripts/eval_cascade.py [--images 300] [--seed 42] [--error-rate 0.05] [--model M]

Held-out synthetic stills (``write_synthetic_dataset``'s val split for ``--seed``; the shipped models were
trained on seed 7, validated on seed 8) go through the daemon's pieces as ``edge-agent tag`` uses them: the
prefilter (run once per image, its results reused for every band), the triage with each band, and for
uncertain images a real gRPC gateway (in this process) in front of the fake Ollama. The fake answers from the
ground truth, wrong about each image with probability ``--error-rate`` (``tests.fakes.vlm_oracle``): a
**stated simulation, not a claim about LLaVA**. Scores are image-level (``agent.tooling.evaluation.cascade``): F1 of
defect versus pass, and the mean F1 over the defect classes (macro).
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from agent.config.loader import load_config  # noqa: E402
from agent.core.detections import PrefilterResult  # noqa: E402
from agent.core.frame import Frame  # noqa: E402
from agent.escalation.merge import merge  # noqa: E402
from agent.runtime.building import load_model  # noqa: E402
from agent.tooling.batch.escalate import GatewayEscalation  # noqa: E402
from agent.tooling.batch.evaluate import Joined, join, strategies  # noqa: E402
from agent.tooling.batch.items import BATCH_NO_GATEWAY, ItemId, build_record  # noqa: E402
from agent.tooling.batch.runner import BATCH_CAMERA, batch_inspector  # noqa: E402
from agent.tooling.dataset.synth import write_synthetic_dataset  # noqa: E402
from agent.tooling.evaluation.cascade import Prediction, vlm_prediction  # noqa: E402
from agent.tooling.evaluation.truth import defect_classes, read_ground_truth  # noqa: E402
from tests.fakes.gateway import GatewayThread, gateway_config  # noqa: E402
from tests.fakes.ollama import FakeOllama  # noqa: E402
from tests.fakes.vlm_oracle import TruthOracle  # noqa: E402

DEFAULT_BANDS = "0.9:0.5,0.8:0.5,0.7:0.5,0.6:0.5,0.8:0.4,0.7:0.4,0.6:0.4,0.6:0.3,0.6:0.25,0.5:0.25,0.6:0.15"


class CachedPrefilter:
    """The model's result for each image computed once (the band does not change it)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.info = model.info
        self._cache: dict[int, PrefilterResult] = {}

    def infer(self, image: np.ndarray) -> PrefilterResult:
        key = id(image)
        if key not in self._cache:
            self._cache[key] = self.model.infer(image)
        return self._cache[key]


def run_band(config: Any, prefilter: CachedPrefilter, images: list[tuple[str, np.ndarray]],
             escalation: GatewayEscalation) -> list[dict[str, Any]]:
    inspector = batch_inspector(config, prefilter)
    records = []
    for sequence, (name, image) in enumerate(images, start=1):
        frame = Frame(camera_id=BATCH_CAMERA, sequence=sequence,
                      captured_at=datetime.datetime.now(datetime.timezone.utc), monotonic=time.monotonic(),
                      image=image)
        inspection = inspector.inspect(frame)
        event = inspection.event
        if inspection.decision.needs_escalation:
            event = escalation(image, inspection.decision, event) if escalation else merge(event, BATCH_NO_GATEWAY,
                                                                                             None)
        records.append(build_record(ItemId(name), event))
    return records


def ask_all(config: Any, prefilter: CachedPrefilter, images: list[tuple[str, np.ndarray]], joined: Joined,
            escalation: GatewayEscalation, classes: frozenset[str]) -> list[Prediction]:
    inspector = batch_inspector(config, prefilter)
    by_item = {str(r["item"]): r for r in joined.records}
    out = []
    for sequence, (name, image) in enumerate(images, start=1):
        frame = Frame(camera_id=BATCH_CAMERA, sequence=sequence,
                      captured_at=datetime.datetime.now(datetime.timezone.utc), monotonic=time.monotonic(),
                      image=image)
        inspection = inspector.inspect(frame)
        _outcome, answer = escalation.ask(image, inspection.decision, inspection.event)
        out.append(vlm_prediction(by_item[name], classes, answer.verdict if answer else None,
                                  [d.type for d in answer.defects] if answer else [],
                                  list(answer.tags) if answer else []))
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300, help="held-out stills to render")
    ap.add_argument("--seed", type=int, default=42, help="dataset seed (val split: seed+1); not a training seed")
    ap.add_argument("--error-rate", type=float, default=0.05, help="simulated VLM: share of images it is wrong about")
    ap.add_argument("--bands", default=DEFAULT_BANDS, help="accept:reject pairs, comma-separated")
    ap.add_argument("--model", type=pathlib.Path, default=None, help="ONNX detector (default: the config default)")
    ap.add_argument("--max-escalation", type=float, default=0.10, help="budget marked in the table")
    return ap


def main() -> int:
    args = _parser().parse_args()
    bands = [tuple(float(v) for v in b.split(":")) for b in args.bands.split(",")]

    base = load_config(None, env={})
    if args.model is not None:
        base = base.model_copy(update={"model": base.model.model_copy(update={"path": args.model})})
    model, _facts, _digest = load_model(base)
    classes = defect_classes(model.info.names)  # type: ignore[attr-defined]
    prefilter = CachedPrefilter(model)

    with tempfile.TemporaryDirectory(prefix="eval-cascade-") as tmp:
        data = pathlib.Path(tmp) / "synth"
        write_synthetic_dataset(data, n_train=1, n_val=args.images, seed=args.seed)
        val = data / "images" / "val"
        images: list[tuple[str, np.ndarray]] = []
        for p in sorted(val.glob("*.jpg")):
            image = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if image is None:
                raise SystemExit(f"eval_cascade: cannot read {p}")
            images.append((str(p), image))
        truth, strip = read_ground_truth(data / "labels", model.info.names)  # type: ignore[attr-defined]
        oracle = TruthOracle.from_yolo(val, data / "labels" / "val", classes, error_rate=args.error_rate,
                                       seed=args.seed)
        with FakeOllama(answer_fn=oracle) as fake:
            gateway = GatewayThread(gateway_config(fake.url)).start()
            try:
                config = base.model_copy(update={"escalation": base.escalation.model_copy(
                    update={"gateway": gateway.address, "call_deadline_s": 30.0})})
                rows = _rows(config, bands, prefilter, images, truth, strip, classes)
            finally:
                gateway.stop(grace=0)

    defects = sum(1 for t in oracle.truths if t)
    print(f"model {model.info.model_id}; {len(images)} held-out stills (seed {args.seed}, val split), "  # type: ignore[attr-defined]
          f"{defects} with a defect; simulated VLM wrong about {100 * args.error_rate:.0f}% of images "
          f"(answer from the ground truth, a stated simulation)")
    _print_table(rows, args.max_escalation)
    return 0


def _rows(config: Any, bands: list[tuple[float, ...]], prefilter: Any, images: list[tuple[str, np.ndarray]],
          truth: Any, strip: Any, classes: Sequence[str]) -> list[tuple[tuple[float, ...], Any]]:
    """Each band's three strategies, through the gateway (the VLM on every image asked once, at the first band)."""
    escalation = GatewayEscalation(config.escalation)
    try:
        rows: list[tuple[tuple[float, ...], Any]] = []
        vlm: list[Prediction] | None = None
        for accept, reject in bands:
            band = config.model_copy(update={"triage": config.triage.model_copy(
                update={"accept": accept, "reject": reject})})
            joined = join(run_band(band, prefilter, images, escalation), truth, strip)
            if vlm is None:
                vlm = ask_all(band, prefilter, images, joined, escalation, frozenset(classes))
            rows.append(((accept, reject), strategies(joined, classes, vlm)))
        return rows
    finally:
        escalation.close()


def _print_table(rows: list[tuple[tuple[float, ...], Any]], max_escalation: float) -> None:
    print(f"{'accept':>6} {'reject':>6} {'escalated':>9} | {'F1 prefilter':>12} {'F1 cascade':>10} {'F1 VLM-all':>10} "
          f"| {'macro prefilter':>15} {'macro cascade':>13} {'macro VLM-all':>13}")

    def f(v: float | None, w: int) -> str:
        return f"{'–' if v is None else f'{v:.3f}':>{w}}"

    for (accept, reject), results in rows:
        pre, cas, allv = results
        within = cas.escalation_rate <= max_escalation
        mark = (" *" if within and (cas.macro_f1 or 0) > (pre.macro_f1 or 0) else "") + (
            " +" if within and (cas.defect.f1 or 0) > (pre.defect.f1 or 0) else "")
        print(f"{accept:>6.2f} {reject:>6.2f} {100 * cas.escalation_rate:>8.1f}% | {f(pre.defect.f1, 12)} "
              f"{f(cas.defect.f1, 10)} {f(allv.defect.f1, 10)} | {f(pre.macro_f1, 15)} {f(cas.macro_f1, 13)} "
              f"{f(allv.macro_f1, 13)}{mark}")
    print(f"*: the cascade's macro (per-class) F1 above the prefilter's, +: its defect F1 above the prefilter's, "
          f"with at most {100 * max_escalation:.0f}% of images escalated. VLM-all escalates 100%, prefilter "
          f"alone 0%. Prefilter alone decides an uncertain image at the reject threshold (every kept tag counts).")


if __name__ == "__main__":
    raise SystemExit(main())
