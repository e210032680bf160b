"""What health, ``/healthz``, ``/metrics`` and the STATUS= line read: immutable snapshots the runtime produces
(``AgentService.progress()`` and ``AgentService.snapshot()``), never the service or its parts.

:class:`Progress` is the stages' progress only, without a lock that a stuck stage could hold (no outbox or
publisher counters): the supervisor builds the watchdog's report from it many times a minute, and it must not
hang where the stage it watches hangs. :class:`AgentSnapshot` adds every counter, for the STATUS= line,
``/healthz`` and ``/metrics``.
"""

from __future__ import annotations

import dataclasses

from agent.capture.grabber import GrabberStats
from agent.core.ports import ReliableStats
from agent.dataset.recorder import DatasetStats
from agent.ops.histogram import HistogramSnapshot
from agent.outputs.images.keeper import ImageStats
from agent.outputs.plc.output import PlcStats
from agent.prefilter.warmup import ModelFacts

__all__ = ["AgentSnapshot", "CameraProgress", "EventCounts", "LoopProgress", "Progress", "PublishProgress"]


@dataclasses.dataclass(frozen=True)
class CameraProgress:
    """One grabber: its counters and state, and whether it is inside a source open or read."""

    stats: GrabberStats
    alive: bool  # its thread runs
    busy_since: float | None  # time.monotonic() when the source call it is in began; None when in none
    busy_doing: str


@dataclasses.dataclass(frozen=True)
class LoopProgress:
    """The inference threads."""

    finished: bool  # every thread ended (all sources ended, stopped, or an error)
    error: BaseException | None  # what ended them, when a stage raised
    last_progress: float  # time.monotonic() of the last frame or idle wait
    inspected: dict[str, int]  # frames the prefilter inspected, per camera


@dataclasses.dataclass(frozen=True)
class PublishProgress:
    """The outbox commit (the event fan-out's call into the publisher) and the outbox forwarder thread."""

    commit_busy_since: float | None  # when the oldest publish_event call still running began; None: none is
    forwarder_alive: bool
    forwarder_progress: float  # time.monotonic() at the start of the forwarder's current pass


@dataclasses.dataclass(frozen=True)
class Progress:
    """The stages' progress, for the watchdog's report (see the module's docstring)."""

    cameras: tuple[CameraProgress, ...]
    loop: LoopProgress | None  # None before start
    publish: PublishProgress | None  # None before start


@dataclasses.dataclass(frozen=True)
class EventCounts:
    """The published tag events, as the metrics listener counted them."""

    events: dict[tuple[str, str, str], int]  # (camera, verdict, decided_by) -> first publications
    updates: dict[tuple[str, str], int]  # (camera, verdict) -> revisions 2+
    escalations: dict[str, int]  # escalation status -> events
    latency: dict[str, HistogramSnapshot]  # stage -> histogram (prefilter, publish, escalation)

    def verdicts(self) -> dict[str, int]:
        """First publications per verdict, all cameras together."""
        out: dict[str, int] = {}
        for (_camera, verdict, _by), n in self.events.items():
            out[verdict] = out.get(verdict, 0) + n
        return out


@dataclasses.dataclass(frozen=True)
class AgentSnapshot:
    """Everything health, ``/healthz`` and ``/metrics`` say about the running agent, at one moment."""

    device_id: str
    needs_model: bool  # False: every camera is in learn mode
    uptime_s: float
    model: ModelFacts | None  # None: no model loaded (learn mode), or handed in without facts
    progress: Progress
    events: EventCounts
    publisher: ReliableStats | None  # None before start
    mqtt_connects: int  # successful connections to the broker so far
    dataset: DatasetStats | None  # None while nothing records
    learn: dict[str, dict[str, int]]  # learn mode: per learning camera, every frame's fate and outcome
    plc: PlcStats | None = None  # None: no camera writes to a PLC
    images: ImageStats | None = None  # audit images; None while no camera keeps them
