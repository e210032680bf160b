"""The runtime's state as the immutable snapshots ops reads (:mod:`agent.ops.snapshot`): built here from the
running parts, so health and metrics never hold the service or its internals."""

from __future__ import annotations

from collections.abc import Sequence

from agent.capture.grabber import Grabber
from agent.core.ports import Publisher
from agent.ops.snapshot import CameraProgress, LoopProgress, Progress, PublishProgress
from agent.runtime.fanout import EventFanout
from agent.runtime.loop import InferenceLoop

__all__ = ["progress_of"]


def progress_of(grabbers: Sequence[Grabber], loop: InferenceLoop | None, events: EventFanout | None,
                publisher: Publisher | None) -> Progress:
    """The stages' progress now. Reads no counter behind the outbox's or the publisher's lock (a stuck commit
    holds it), so the watchdog's report cannot hang on the stage it watches."""
    cameras = tuple(CameraProgress(g.stats(), g.alive, g.busy_since, g.busy_doing) for g in grabbers)
    loop_progress = None if loop is None else LoopProgress(
        finished=loop.finished, error=loop.error, last_progress=loop.last_progress,
        inspected=dict(loop.counters.inspected))
    publish = None if events is None or publisher is None else PublishProgress(
        commit_busy_since=events.busy_since, forwarder_alive=publisher.forwarder_alive,
        forwarder_progress=publisher.last_progress)
    return Progress(cameras, loop_progress, publish)
