"""``edge-agent tag --labels``: the finished output against ground truth, for three strategies (I/O glue).

The pure parts are :mod:`agent.tooling.evaluation.cascade` (predictions, metrics) and
:mod:`agent.tooling.evaluation.truth` (reading labels). Here: join the output's records to the labels,
and, with a gateway, ask the VLM about every labelled image ("VLM on every image"; the image is decoded and
run through the prefilter again, so that the request carries the same hints as the cascade's).
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from agent.core.frame import Frame
from agent.runtime.inspector import FrameInspector
from agent.tooling.batch.escalate import GatewayEscalation
from agent.tooling.batch.items import BadInput, ItemId
from agent.tooling.batch.runner import BATCH_CAMERA
from agent.tooling.batch.sources import Plan, decode
from agent.tooling.evaluation.cascade import (
    Prediction,
    StrategyResult,
    Truth,
    cascade_prediction,
    evaluate,
    prefilter_prediction,
    vlm_prediction,
)
from agent.tooling.evaluation.truth import GroundTruth


@dataclasses.dataclass(frozen=True)
class Joined:
    records: tuple[Mapping[str, Any], ...]
    truths: tuple[Truth, ...]
    unlabelled: tuple[str, ...]  # item ids no label names


def join(records: Sequence[Mapping[str, Any]], truth: GroundTruth, strip_suffix: bool) -> Joined:
    """The records that a label names (video frames are never labelled), with their truths."""
    kept: list[Mapping[str, Any]] = []
    truths: list[Truth] = []
    unlabelled: list[str] = []
    for r in records:
        found = truth.lookup(str(r["path"]), strip_suffix) if r.get("frame") is None else None
        if found is None:
            unlabelled.append(str(r["item"]))
        else:
            kept.append(r)
            truths.append(found)
    return Joined(tuple(kept), tuple(truths), tuple(unlabelled))


def ask_every_image(joined: Joined, plan: Plan, inspector: FrameInspector, escalation: GatewayEscalation,
                    classes: frozenset[str], stop: threading.Event) -> list[Prediction]:
    """The VLM's prediction for every joined record, in their order."""
    wanted = {str(r["item"]) for r in joined.records}
    answers: dict[str, Prediction] = {}
    by_item = {str(r["item"]): r for r in joined.records}
    sequence = 0
    for file in plan.files:
        if file.kind != "image" or stop.is_set():
            continue
        for got in decode(file, 1, lambda item: item.text in wanted, stop.is_set):
            if isinstance(got, BadInput):
                continue  # unreadable now: keeps the prefilter rule below
            item: ItemId = got.item
            sequence += 1
            frame = Frame(camera_id=BATCH_CAMERA, sequence=sequence,
                          captured_at=datetime.datetime.now(datetime.timezone.utc), monotonic=time.monotonic(),
                          image=got.image)
            inspection = inspector.inspect(frame)
            _outcome, answer = escalation.ask(frame.image, inspection.decision, inspection.event)
            record = by_item[item.text]
            answers[item.text] = vlm_prediction(
                record, classes, answer.verdict if answer else None,
                [d.type for d in answer.defects] if answer else [], list(answer.tags) if answer else [])
    return [answers.get(str(r["item"]), dataclasses.replace(prefilter_prediction(r, classes), escalated=True))
            for r in joined.records]


def strategies(joined: Joined, class_names: Sequence[str],
               vlm: Sequence[Prediction] | None) -> list[StrategyResult]:
    """Prefilter alone, the cascade, and (when ``vlm`` is given) VLM on every image."""
    classes = frozenset(class_names)
    records = joined.records
    out = [evaluate("prefilter", class_names, joined.truths, [prefilter_prediction(r, classes) for r in records]),
           evaluate("cascade", class_names, joined.truths, [cascade_prediction(r, classes) for r in records])]
    if vlm is not None:
        out.append(evaluate("vlm", class_names, joined.truths, vlm))
    return out
