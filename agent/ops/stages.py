"""Is every stage making progress? The one rule the systemd watchdog and ``/healthz`` share. Pure logic.

Each stage reports a :class:`StageProgress`: since when it has been *busy* without
finishing (``busy_since``, a ``time.monotonic()`` value; None when it is waiting
for work, which is not being stuck) and its state:

* ``running``: expected to make progress; stuck when busy for longer than ``window_s``.
* ``idle``: finished normally (a file that ended, a service stopping): not checked.
* ``dead``: its thread ended unexpectedly (a bug, logged where it happened): the
  watchdog stops, a restart may help.
* ``failed``: it gave up for good (a video file that cannot be opened): ``/healthz``
  says so, but the watchdog goes on, since a restart does not fix a bad source.

A live camera waiting to reconnect is ``running`` and not busy: it is doing its job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

__all__ = ["HealthReport", "StageProgress", "StageState", "evaluate"]

StageState = Literal["running", "idle", "dead", "failed"]


@dataclasses.dataclass(frozen=True)
class StageProgress:
    name: str  # "inference", "camera cam1", "outbox forwarder"
    state: StageState
    busy_since: float | None  # monotonic time it started the work it is still doing; None: waiting
    window_s: float
    doing: str = ""  # what it is busy with, for the message ("reading a frame", "prefilter")
    reason: str = ""  # why it failed or died

    def busy_for(self, now: float) -> float:
        return 0.0 if self.busy_since is None else max(0.0, now - self.busy_since)

    def stuck(self, now: float) -> bool:
        return self.state == "running" and self.busy_for(now) > self.window_s


@dataclasses.dataclass(frozen=True)
class HealthReport:
    stages: tuple[StageProgress, ...]
    problems: tuple[str, ...]  # one line each, naming the stage
    stuck: tuple[str, ...]  # names of the stages that stop the watchdog (stuck or dead)
    now: float

    @property
    def watchdog_ok(self) -> bool:
        """True while WATCHDOG=1 may be sent: no stage stuck or dead."""
        return not self.stuck

    @property
    def healthy(self) -> bool:
        """True when ``/healthz`` answers 200: no problem at all."""
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {s.name: {"state": "stuck" if s.stuck(self.now) else s.state,
                         "busy_s": round(s.busy_for(self.now), 3), "window_s": s.window_s,
                         **({"doing": s.doing} if s.busy_since is not None and s.doing else {}),
                         **({"reason": s.reason} if s.reason else {})}
                for s in self.stages}


def evaluate(stages: Sequence[StageProgress], now: float) -> HealthReport:
    problems: list[str] = []
    stuck: list[str] = []
    for s in stages:
        if s.stuck(now):
            what = f" ({s.doing})" if s.doing else ""
            problems.append(f"{s.name} stuck: busy{what} for {s.busy_for(now):.1f} s, longer than its "
                            f"{s.window_s:g} s window")
            stuck.append(s.name)
        elif s.state == "dead":
            problems.append(f"{s.name} stopped: {s.reason or 'its thread ended'}")
            stuck.append(s.name)
        elif s.state == "failed":
            problems.append(f"{s.name} failed: {s.reason or 'gave up'}")
    return HealthReport(tuple(stages), tuple(problems), tuple(stuck), now)
