"""The ``sparkplug:`` section of the agent's config: Sparkplug B 3.0 output (:mod:`agent.outputs.sparkplug`) beside
the JSON tag events, on the broker of ``mqtt:``. See docs/sparkplug.md."""

from __future__ import annotations

import pathlib
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from agent.config.base import Strict

__all__ = ["DEVICE_METRICS", "DeviceMetric", "SparkplugConfig", "check_sparkplug_id"]

DeviceMetric = Literal[
    "Inspection/Verdict", "Inspection/Defect Codes", "Inspection/Sequence", "Inspection/Event Id",
    "Inspection/Captured At", "Inspection/Decided By", "Inspection/Model Id", "Inspection/Escalation",
    "Counters/Inspected", "Counters/Pass", "Counters/Defect", "Counters/Uncertain",
]
DEVICE_METRICS: tuple[DeviceMetric, ...] = (
    "Inspection/Verdict", "Inspection/Defect Codes", "Inspection/Sequence", "Inspection/Event Id",
    "Inspection/Captured At", "Inspection/Decided By", "Inspection/Model Id", "Inspection/Escalation",
    "Counters/Inspected", "Counters/Pass", "Counters/Defect", "Counters/Uncertain",
)

_FORBIDDEN = "+/#"


def check_sparkplug_id(value: str, what: str) -> str:
    """``value`` when it is a valid Sparkplug B id (spec 4.1.1: a non-empty UTF-8 string without '+', '/' or '#',
    which are MQTT's topic level separator and wildcards); else ValueError naming ``what`` and the character."""
    bad = sorted({c for c in value if c in _FORBIDDEN})
    if not value or bad:
        why = "is empty" if not value else f"contains {' and '.join(repr(c) for c in bad)}"
        raise ValueError(f"{what} {value!r} {why}; Sparkplug B ids become MQTT topic levels, so they must be "
                         "non-empty and free of '+', '/' and '#'")
    if len(value.encode("utf-8")) > 256:
        raise ValueError(f"{what} {value[:32]!r}... is longer than 256 bytes; use a shorter id")
    return value


class SparkplugConfig(Strict):
    """Sparkplug B 3.0 on the broker of ``mqtt:``: the agent is an edge node (``group_id``/``edge_node_id``)
    and every camera one of its devices. Its own MQTT session (client id ``<mqtt client id>-spb``) carries
    NBIRTH/DBIRTH, one DDATA per tag event, the NDEATH as its will, and answers the host's rebirth requests."""

    enabled: bool = False
    group_id: str | None = Field(default=None, description="Sparkplug group id (required when enabled)")
    edge_node_id: str | None = Field(default=None, description="this box's edge node id (required when enabled)")
    primary_host_id: str | None = Field(default=None, description=(
        "the primary host application's id (e.g. Ignition's): births wait for its STATE to say online, and the "
        "node disconnects when it goes offline; none: births at every connect"))
    devices: dict[str, str] = Field(default_factory=dict, description=(
        "camera id -> Sparkplug device id; a camera not named here is the device of the same id"))
    metrics: list[DeviceMetric] = Field(default_factory=lambda: list(DEVICE_METRICS), min_length=1, description=(
        "the device metrics each camera reports (all by default)"))
    store_path: pathlib.Path | None = Field(default=None, description=(
        "the SQLite store of DDATA not yet sent, and the bdSeq file beside it; default: next to the outbox"))
    max_rows: Annotated[int, Field(ge=1)] = Field(default=100_000, description=(
        "events the store keeps while the broker or the primary host is away; the oldest are evicted, counted"))
    batch: Annotated[int, Field(ge=1, le=1000)] = Field(default=64, description=(
        "DDATA sent before the node asks the broker for a round trip that proves it read them"))

    @field_validator("group_id", "edge_node_id", "primary_host_id")
    @classmethod
    def _ids(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else check_sparkplug_id(v, f"sparkplug.{info.field_name}")

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: dict[str, str]) -> dict[str, str]:
        for camera, device in v.items():
            check_sparkplug_id(device, f"sparkplug.devices.{camera}")
        taken = [d for d in set(v.values()) if list(v.values()).count(d) > 1]
        if taken:
            raise ValueError(f"sparkplug.devices: device id(s) {', '.join(sorted(taken))} are given to more than one "
                             "camera; each camera needs its own device id")
        return v

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, v: list[DeviceMetric]) -> list[DeviceMetric]:
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _required_when_enabled(self) -> SparkplugConfig:
        missing = [name for name in ("group_id", "edge_node_id") if self.enabled and getattr(self, name) is None]
        if missing:
            raise ValueError(f"sparkplug is enabled but {' and '.join('sparkplug.' + m for m in missing)} "
                             f"{'is' if len(missing) == 1 else 'are'} not set; Sparkplug B topics are "
                             "spBv1.0/<group_id>/<message type>/<edge_node_id>[/<device_id>]")
        return self

    def device_for(self, camera: str) -> str:
        """The Sparkplug device id of ``camera``."""
        return self.devices.get(camera, camera)
