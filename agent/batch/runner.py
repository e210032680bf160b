"""The batch tagging loop: decoded items -> :class:`agent.pipeline.FrameInspector` -> record -> output.

One item at a time, in item order; ``stop`` (set by SIGINT) is checked between items, so the current item
is finished and written before the loop ends. The prefilter and triage are the daemon's
(:class:`~agent.pipeline.FrameInspector` with a camera that uses the config's triage band); the escalation
of uncertain items goes through ``escalate`` (the gateway, when the config names one); without it, it is
recorded as ``unavailable`` (:data:`agent.batch.items.BATCH_NO_GATEWAY`), merged into the event by
:func:`agent.escalation.merge.merge` as the daemon does when there is no answer.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable

import numpy as np

from agent.batch.items import BATCH_NO_GATEWAY, BadInput, ItemId, Summary, build_record
from agent.batch.output import OutputFile
from agent.batch.sources import Plan, decode
from agent.capture.frame import Frame
from agent.config.models import AgentConfig, CameraConfig
from agent.escalation.merge import merge
from agent.pipeline import FrameInspector, Prefilter
from agent.publish.event import TagEvent
from agent.triage.policy import TriageDecision

BATCH_CAMERA = "batch"


def batch_inspector(config: AgentConfig, prefilter: Prefilter) -> FrameInspector:
    """The daemon's inspector with one camera, ``batch``, that uses the config's global triage band."""
    camera = CameraConfig(id=BATCH_CAMERA, source="batch")
    return FrameInspector(config.model_copy(update={"cameras": [camera]}), prefilter)


Escalate = Callable[[np.ndarray, TriageDecision, TagEvent], TagEvent]
"""An uncertain item's image, triage and event -> the event with the escalation merged in
(:class:`agent.batch.escalate.GatewayEscalation`)."""

Progress = Callable[[Summary, bool], None]
"""Called after every item (and once at the end with ``final`` True)."""


def run_batch(plan: Plan, inspector: FrameInspector, output: OutputFile, summary: Summary, *, video_step: int,
              stop: threading.Event, progress: Progress | None = None, on_bad: Callable[[BadInput], None] | None = None,
              escalate: Escalate | None = None, throttle_s: float = 0.0) -> Summary:
    """Tag every item of ``plan`` not yet in ``output``; ``summary`` is filled in as it goes."""
    summary.planned = plan.planned
    summary.bad.extend(plan.bad)
    if on_bad is not None:
        for bad in plan.bad:
            on_bad(bad)
    done = output.done
    summary.resumed.update(done)
    sequence = 0
    started = time.monotonic()

    def wanted(item: ItemId) -> bool:
        return item.text not in done

    try:
        for file in plan.files:
            if stop.is_set():
                break
            for got in decode(file, video_step, wanted, stop.is_set):
                if isinstance(got, BadInput):
                    summary.planned -= file.frames if file.kind == "image" else 0
                    summary.bad.append(got)
                    if on_bad is not None:
                        on_bad(got)
                    continue
                sequence += 1
                frame = Frame(camera_id=BATCH_CAMERA, sequence=sequence,
                              captured_at=datetime.datetime.now(datetime.timezone.utc),
                              monotonic=time.monotonic(), image=got.image)
                inspection = inspector.inspect(frame)
                event = inspection.event
                if inspection.decision.needs_escalation:
                    event = (merge(event, BATCH_NO_GATEWAY, None) if escalate is None
                             else escalate(got.image, inspection.decision, event))
                record = build_record(got.item, event)
                output.write(record)
                summary.add(record)
                summary.seconds = time.monotonic() - started
                if progress is not None:
                    progress(summary, False)
                if throttle_s > 0:
                    stop.wait(throttle_s)
                if stop.is_set():
                    break
    finally:
        summary.seconds = time.monotonic() - started
        summary.interrupted = stop.is_set()
        if not summary.interrupted:  # a video's frame count was the container's estimate
            summary.planned = len(summary.resumed) + len(summary.tagged)
    if progress is not None:
        progress(summary, True)
    return summary
