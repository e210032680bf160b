"""The listeners of the event fan-out (:mod:`agent.runtime.fanout`) that the runtime wires in beside the metrics:
the dataset recorder and the learn-mode tally hear of the events the escalation thread published."""

from __future__ import annotations

from agent.core.ports import Published
from agent.dataset.recorder import DatasetRecorder
from agent.escalation.sampler import LearnTally

__all__ = ["RecorderListener", "TallyListener"]


class RecorderListener:
    """Tells the dataset recorder the outcome of every escalated event (when one is set: a reload can turn
    recording on)."""

    def __init__(self, recorder: DatasetRecorder | None) -> None:
        self.recorder = recorder

    def on_published(self, published: Published) -> None:
        recorder = self.recorder
        if recorder is not None and published.escalated:
            recorder.outcome(published.event)


class TallyListener:
    """Counts the learn-mode outcomes (``LearnTally.outcome``) of the escalated events."""

    def __init__(self, tally: LearnTally) -> None:
        self.tally = tally

    def on_published(self, published: Published) -> None:
        if published.escalated:
            self.tally.outcome(published.event)
