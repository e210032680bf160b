"""The batch tagging loop: decoded items -> :class:`agent.runtime.inspector.FrameInspector` -> record -> output.

The prefilter and triage run one item at a time, in item order, on the calling thread (the daemon's
:class:`~agent.runtime.inspector.FrameInspector` with a camera that uses the config's triage band). The escalation
of uncertain items goes through ``escalate`` (the gateway, when the config names one), which starts a call
and returns a future: up to ``max_in_flight`` calls run at once while the loop goes on with the next items.
Records are written in item order all the same: a finished record waits in a buffer until every earlier
item's record is written. Without ``escalate``, the escalation is recorded as ``unavailable``
(:data:`agent.tooling.batch.items.BATCH_NO_GATEWAY`), merged into the event by :func:`agent.escalation.merge.merge`
as the daemon does when there is no answer.

``stop`` (set by SIGINT) is checked between items. When it is set, no new item is read and the calls still
in flight are cancelled (a VLM call may take seconds; Ctrl-C should not wait for them): the records that
are finished and have no unfinished item before them are written, and nothing after the first cancelled
call is, so the output stays a prefix in item order and a rerun tags exactly the items that are missing.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import threading
import time
from collections.abc import Callable

import numpy as np

from agent.config.models import AgentConfig, CameraConfig
from agent.core.decision import TriageDecision
from agent.core.event import TagEvent
from agent.core.frame import Frame
from agent.core.ports import Prefilter
from agent.escalation.merge import merge
from agent.runtime.inspector import FrameInspector
from agent.tooling.batch.items import BATCH_NO_GATEWAY, BadInput, ItemId, Summary, build_record
from agent.tooling.batch.output import OutputFile
from agent.tooling.batch.sources import Plan, decode

BATCH_CAMERA = "batch"


def batch_inspector(config: AgentConfig, prefilter: Prefilter) -> FrameInspector:
    """The daemon's inspector with one camera, ``batch``, that uses the config's global triage band."""
    camera = CameraConfig(id=BATCH_CAMERA, source="batch")
    return FrameInspector(config.model_copy(update={"cameras": [camera]}), prefilter)


Escalate = Callable[[np.ndarray, TriageDecision, TagEvent], "concurrent.futures.Future[TagEvent]"]
"""An uncertain item's image, triage and event -> a started call whose result is the event with the
escalation merged in (:meth:`agent.tooling.batch.escalate.GatewayEscalation.submit`); cancelling it cancels the call."""


@dataclasses.dataclass
class _Pending:
    """An item tagged by the prefilter whose record is not written yet: its event, or its call."""

    item: ItemId
    event: TagEvent | None = None
    call: concurrent.futures.Future[TagEvent] | None = None

    def ready(self) -> bool:
        """Its record can be written: no call, or a call that ended (a cancelled call's item is never written)."""
        return self.call is None or (self.call.done() and not self.call.cancelled())

Progress = Callable[[Summary, bool], None]
"""Called after every item (and once at the end with ``final`` True)."""


def run_batch(plan: Plan, inspector: FrameInspector, output: OutputFile, summary: Summary, *, video_step: int,
              stop: threading.Event, progress: Progress | None = None, on_bad: Callable[[BadInput], None] | None = None,
              escalate: Escalate | None = None, max_in_flight: int = 1,
              throttle_s: float = 0.0) -> Summary:
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
    queue: collections.deque[_Pending] = collections.deque()  # in item order, not yet written
    limit = max(1, max_in_flight)

    def wanted(item: ItemId) -> bool:
        return item.text not in done

    def write_ready() -> None:
        """Write the records at the head of the queue whose item is finished, in item order."""
        while queue and queue[0].ready():
            pending = queue.popleft()
            event = pending.event if pending.call is None else pending.call.result()
            assert event is not None
            record = build_record(pending.item, event)
            output.write(record)
            summary.add(record)
            summary.seconds = time.monotonic() - started
            if progress is not None:
                progress(summary, False)

    def in_flight() -> list[concurrent.futures.Future[TagEvent]]:
        return [p.call for p in queue if p.call is not None and not p.call.done()]

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
                if not inspection.decision.needs_escalation:
                    queue.append(_Pending(got.item, event=event))
                elif escalate is None:
                    queue.append(_Pending(got.item, event=merge(event, BATCH_NO_GATEWAY, None)))
                else:
                    calls = in_flight()
                    while len(calls) >= limit and not stop.is_set():  # wait for a free slot
                        concurrent.futures.wait(calls, timeout=0.1, return_when=concurrent.futures.FIRST_COMPLETED)
                        write_ready()
                        calls = in_flight()
                    if stop.is_set():
                        break  # this item is not written; the rerun tags it
                    queue.append(_Pending(got.item, call=escalate(got.image, inspection.decision, event)))
                write_ready()
                if throttle_s > 0:
                    stop.wait(throttle_s)
                if stop.is_set():
                    break
        while queue and not stop.is_set():  # the last calls
            concurrent.futures.wait(in_flight(), timeout=0.1, return_when=concurrent.futures.FIRST_COMPLETED)
            write_ready()
    finally:
        for pending in queue:  # interrupted (or failed): cancel the calls still running
            if pending.call is not None:
                pending.call.cancel()
        if stop.is_set():
            write_ready()  # what finished before the first unfinished item; nothing after it
        queue.clear()
        summary.seconds = time.monotonic() - started
        summary.interrupted = stop.is_set()
        if not summary.interrupted:  # a video's frame count was the container's estimate
            summary.planned = len(summary.resumed) + len(summary.tagged)
    if progress is not None:
        progress(summary, True)
    return summary
