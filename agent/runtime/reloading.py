"""What a config reload (``AgentService.reload``) prepares and what it reports; the steps themselves are the
service's (:mod:`agent.runtime.service`)."""

from __future__ import annotations

import dataclasses

from agent.capture.grabber import Grabber
from agent.config.reload import ReloadPlan
from agent.core.ports import Prefilter
from agent.dataset.recorder import DatasetRecorder
from agent.prefilter.warmup import ModelFacts

__all__ = ["PreparedReload", "ReloadResult"]


@dataclasses.dataclass(frozen=True)
class ReloadResult:
    """What :meth:`AgentService.reload_file` did: ``applied`` with its ``plan``, or refused with the
    ``problems`` (one line each, as ``edge-agent config check`` prints them)."""

    applied: bool
    plan: ReloadPlan | None = None
    problems: tuple[str, ...] = ()
    model_reloaded: bool = False

    def describe(self) -> str:
        """What an applied reload changed, in words (the log line and STATUS=)."""
        what = self.plan.describe() if self.plan is not None else "no change"
        if self.model_reloaded and (self.plan is None or not self.plan.model_changed):
            what = "model file changed on disk, reloaded" if what == "no change" else f"{what}; model file reloaded"
        return what


@dataclasses.dataclass(frozen=True)
class PreparedReload:
    """What step 1 of a reload prepared beside the running stages."""

    plan: ReloadPlan
    prefilter: Prefilter | None
    facts: ModelFacts | None
    digest: str | None
    model_reloaded: bool
    recording: set[str]  # the cameras that record
    recorder: DatasetRecorder | None
    fresh: dict[str, Grabber]  # new grabbers of the cameras added or changed
