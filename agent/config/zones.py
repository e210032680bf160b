"""The ``cameras[].zones`` section: polygons to inspect and polygons to ignore, in pixels or fractions of the
frame, and the rule that says whether a detection is inside (docs/zones.md).

Checked at load: at least 3 points, no self-intersection, unique names, fractions within 0..1, no include
overlapping an exclude (unless ``allow_overlap``: then the exclude wins), something left to inspect. Pixel
zones are checked against the frame when its size is known (the camera's first frame,
:mod:`agent.triage.zones`). :meth:`ZonesConfig.resolve` turns the section into a
:class:`agent.core.zones.FrameZones` for one frame size.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from agent.config.base import Strict
from agent.core.zones import FrameZones, Polygon, ZoneRule, points_in_polygon, polygons_overlap, self_intersection

__all__ = ["ZoneConfig", "ZonesConfig"]

Units = Literal["fraction", "pixels"]
_GRID = 200  # cells per side of the grid that checks a fraction zone set leaves something to inspect


class ZoneConfig(Strict):
    """One polygon: a name (it appears in events and on snapshots) and its corners in order."""

    name: str = Field(min_length=1, max_length=64)
    points: list[tuple[float, float]] = Field(description="[[x, y], ...]: at least 3 corners in order around "
                                              "the polygon; x to the right, y down, from the top-left corner")
    units: Units | None = Field(default=None, description="fraction: 0..1 of the frame's width and height; "
                                "pixels: frame pixels; None: the section's units")

    @model_validator(mode="after")
    def _polygon(self) -> ZoneConfig:
        v = self.points
        if len(v) < 3:
            raise ValueError(f"zone {self.name!r} needs at least 3 points (a polygon), got {len(v)}")
        if not all(np.isfinite(c) for p in v for c in p):
            raise ValueError(f"zone {self.name!r}: every coordinate must be a finite number")
        crossing = self_intersection([(float(x), float(y)) for x, y in v])
        if crossing is not None:
            i, j = crossing
            raise ValueError(f"zone {self.name!r} crosses itself (its edges from point {i} and from point {j} meet, "
                             "or a point repeats); list the corners in order around the zone")
        return self


class ZonesConfig(Strict):
    """Where a camera inspects. A detection counts when it is inside the inspected area: inside an ``include``
    polygon (anywhere in the frame when there is none) and outside every ``exclude`` polygon. ``rule``:
    ``centre`` (default): the box's centre is inside; ``overlap``: at least ``min_overlap`` of the box's area
    is. A classifier sees the bounding box of the include polygons, cut out, with the excluded pixels filled."""

    include: list[ZoneConfig] = Field(default_factory=list, description="polygons to inspect; none: the frame")
    exclude: list[ZoneConfig] = Field(default_factory=list, description="polygons to ignore")
    units: Units = Field(default="fraction", description="units of zones that do not say theirs")
    rule: ZoneRule = Field(default="centre", description="centre: a box counts when its centre is inside; "
                           "overlap: when at least min_overlap of its area is")
    min_overlap: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=0.5, description="the overlap rule: least share of a box's area inside the inspected area")
    allow_overlap: bool = Field(default=False, description="let an exclude overlap an include (the exclude "
                                "wins); by default that is refused as a likely mistake")

    @model_validator(mode="after")
    def _check(self) -> ZonesConfig:
        if not self.include and not self.exclude:
            raise ValueError("zones needs at least one include or exclude polygon")
        names = [z.name for z in (*self.include, *self.exclude)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"zone name(s) {', '.join(map(repr, twice))} used more than once; names must be unique")
        for kind, zones in (("include", self.include), ("exclude", self.exclude)):
            for zone in zones:
                if self.units_of(zone) == "fraction":
                    bad = [p for p in zone.points if not (0.0 <= p[0] <= 1.0 and 0.0 <= p[1] <= 1.0)]
                    if bad:
                        raise ValueError(f"{kind} zone {zone.name!r} is in fractions of the frame but point "
                                         f"{list(bad[0])} is outside 0..1 (the frame); use units: pixels for "
                                         "pixel coordinates")
        self._check_overlaps()
        if all(self.units_of(z) == "fraction" for z in (*self.include, *self.exclude)):
            left = self.resolve(_GRID, _GRID)
            if not _leaves_something(left):
                raise ValueError("these zones leave nothing to inspect: the exclude polygons cover every include "
                                 "polygon (or the whole frame)")
        return self

    def _check_overlaps(self) -> None:
        if self.allow_overlap:
            return
        for inc in self.include:
            for exc in self.exclude:
                if self.units_of(inc) != self.units_of(exc):
                    continue  # compared when the frame size is known (agent.triage.zones)
                if polygons_overlap(_pts(inc), _pts(exc)):
                    raise ValueError(
                        f"exclude zone {exc.name!r} overlaps include zone {inc.name!r}; shrink one of them, or set "
                        "allow_overlap: true to ignore the overlapping part (the exclude wins)")

    def units_of(self, zone: ZoneConfig) -> Units:
        return zone.units or self.units

    def resolve(self, width: int, height: int) -> FrameZones:
        """The zones in pixels of a ``width`` x ``height`` frame (fractions scaled, pixels as given)."""
        def px(zone: ZoneConfig) -> Polygon:
            sx, sy = (width, height) if self.units_of(zone) == "fraction" else (1, 1)
            return Polygon(zone.name, tuple((float(x) * sx, float(y) * sy) for x, y in zone.points))
        return FrameZones(width, height, tuple(px(z) for z in self.include), tuple(px(z) for z in self.exclude),
                          self.rule, self.min_overlap)


def _pts(zone: ZoneConfig) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in zone.points]


def _leaves_something(zones: FrameZones) -> bool:
    """Whether some cell centre of a grid over the frame is inside the inspected area (a coarse check for load
    time; the exact one is made on the frame's own pixels, :mod:`agent.triage.zones`)."""
    ys, xs = np.mgrid[0:_GRID, 0:_GRID].astype(np.float64)
    xs = (xs + 0.5) * zones.width / _GRID
    ys = (ys + 0.5) * zones.height / _GRID
    keep = np.zeros(xs.shape, dtype=bool) if zones.include else np.ones(xs.shape, dtype=bool)
    for zone in zones.include:
        keep |= points_in_polygon(xs, ys, zone.points)
    for zone in zones.exclude:
        keep &= ~points_in_polygon(xs, ys, zone.points)
    return bool(keep.any())
