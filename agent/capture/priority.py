"""Thread priorities: moved to :mod:`agent.core.priority` (the publish stage's threads yield too); re-exported."""

from __future__ import annotations

from agent.core.priority import FEEDER_NICE as FEEDER_NICE
from agent.core.priority import yield_to_model as yield_to_model
