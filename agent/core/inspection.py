"""One inspected frame: what the runtime hands its listeners (dataset recorder, live views, tests)."""

from __future__ import annotations

import dataclasses

from agent.core.decision import TriageDecision
from agent.core.detections import PrefilterResult
from agent.core.event import TagEvent
from agent.core.frame import Frame
from agent.core.zones import FrameZones


@dataclasses.dataclass(frozen=True)
class Inspection:
    """One inspected frame: the event plus what produced it (for live views and tests)."""

    frame: Frame
    result: PrefilterResult
    decision: TriageDecision
    event: TagEvent
    zones: FrameZones | None = None  # the camera's zones as applied to this frame (drawn on its snapshot)
