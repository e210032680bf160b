"""The anomaly band of ``triage:`` (``triage.anomaly``), for a prefilter of task ``anomaly``.

An anomaly model gives each frame a score; the agent turns it into a confidence in 0..1 that is 0.5 at the
model's own threshold (metadata ``threshold``, picked at a stated false-reject rate of good frames when it was
trained; see agent.prefilter.anomaly). A frame whose confidence is below ``pass_below`` passes, one at or above
``defect_at`` is a defect, and one in between is uncertain and escalated to the VLM.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from agent.config.base import Strict

__all__ = ["AnomalyBandConfig"]


class AnomalyBandConfig(Strict):
    """Anomaly models: pass below ``pass_below``, defect at or above ``defect_at`` (0.5 = the model's
    threshold), uncertain (escalated) in between."""

    pass_below: Annotated[float, Field(ge=0.0, le=1.0, description=(
        "anomaly models: a frame whose anomaly confidence is below this passes (0.5 is the model's threshold)"
    ))] = 0.4
    defect_at: Annotated[float, Field(ge=0.0, le=1.0, description=(
        "anomaly models: a frame whose anomaly confidence is at or above this is a defect"))] = 0.7

    @model_validator(mode="after")
    def _band(self) -> AnomalyBandConfig:
        if self.pass_below > self.defect_at:
            raise ValueError(f"anomaly.pass_below ({self.pass_below}) must not be above anomaly.defect_at "
                             f"({self.defect_at})")
        return self
