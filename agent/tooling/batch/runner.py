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
from agent.core.inspection import Inspection
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
    run = _Run(output, summary, stop, progress, escalate, max(1, max_in_flight))
    sequence = 0
    try:
        for file in plan.files:
            if stop.is_set():
                break
            for got in decode(file, video_step, lambda item: item.text not in done, stop.is_set):
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
                if not run.take(got.item, got.image, inspector.inspect(frame)):
                    break  # stopped while waiting for a call slot: this item is not written; the rerun tags it
                if throttle_s > 0:
                    stop.wait(throttle_s)
                if stop.is_set():
                    break
        run.drain()
    finally:
        run.finish()
    if progress is not None:
        progress(summary, True)
    return summary


class _Run:
    """One run's queue of items in item order, not yet written, and the escalation calls among them."""

    def __init__(self, output: OutputFile, summary: Summary, stop: threading.Event, progress: Progress | None,
                 escalate: Escalate | None, limit: int) -> None:
        self.output, self.summary, self.stop, self.progress = output, summary, stop, progress
        self.escalate, self.limit = escalate, limit
        self.queue: collections.deque[_Pending] = collections.deque()
        self.started = time.monotonic()

    def take(self, item: ItemId, image: np.ndarray, inspection: Inspection) -> bool:
        """Queue an inspected item (starting its escalation call if it needs one) and write what is ready.
        False when stopped while waiting for a free call slot (the item is not queued)."""
        event = inspection.event
        if not inspection.decision.needs_escalation:
            self.queue.append(_Pending(item, event=event))
        elif self.escalate is None:
            self.queue.append(_Pending(item, event=merge(event, BATCH_NO_GATEWAY, None)))
        else:
            calls = self.in_flight()
            while len(calls) >= self.limit and not self.stop.is_set():  # wait for a free slot
                concurrent.futures.wait(calls, timeout=0.1, return_when=concurrent.futures.FIRST_COMPLETED)
                self.write_ready()
                calls = self.in_flight()
            if self.stop.is_set():
                return False
            self.queue.append(_Pending(item, call=self.escalate(image, inspection.decision, event)))
        self.write_ready()
        return True

    def in_flight(self) -> list[concurrent.futures.Future[TagEvent]]:
        return [p.call for p in self.queue if p.call is not None and not p.call.done()]

    def write_ready(self) -> None:
        """Write the records at the head of the queue whose item is finished, in item order."""
        while self.queue and self.queue[0].ready():
            pending = self.queue.popleft()
            event = pending.event if pending.call is None else pending.call.result()
            assert event is not None
            record = build_record(pending.item, event)
            self.output.write(record)
            self.summary.add(record)
            self.summary.seconds = time.monotonic() - self.started
            if self.progress is not None:
                self.progress(self.summary, False)

    def drain(self) -> None:
        """Wait for the last calls, writing as they finish (until stopped)."""
        while self.queue and not self.stop.is_set():
            concurrent.futures.wait(self.in_flight(), timeout=0.1, return_when=concurrent.futures.FIRST_COMPLETED)
            self.write_ready()

    def finish(self) -> None:
        """Cancel the calls still running (interrupted or failed), write what finished before the first unfinished
        item when stopped, and close the summary."""
        for pending in self.queue:
            if pending.call is not None:
                pending.call.cancel()
        if self.stop.is_set():
            self.write_ready()  # what finished before the first unfinished item; nothing after it
        self.queue.clear()
        self.summary.seconds = time.monotonic() - self.started
        self.summary.interrupted = self.stop.is_set()
        if not self.summary.interrupted:  # a video's frame count was the container's estimate
            self.summary.planned = len(self.summary.resumed) + len(self.summary.tagged)
