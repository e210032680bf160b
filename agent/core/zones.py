"""Inspection zones: the shared types and the pure polygon geometry. numpy only, no I/O.

A camera's zones (``cameras[].zones``, :mod:`agent.config.zones`) are polygons to inspect (``include``) and
polygons to ignore (``exclude``). Once the frame size is known they are resolved to pixels as a
:class:`FrameZones`, which the triage stage applies (:mod:`agent.triage.zones`) and the snapshots draw.
What a frame's event says about them is a :class:`ZoneReport`.

The geometry here (:func:`self_intersection`, :func:`polygons_overlap`, :func:`polygon_area`) is what the
config check needs: plain segment tests, exact for the few-vertex polygons zones are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = [
    "Point", "Polygon", "FrameZones", "ZoneReport", "ZoneRule", "polygon_area", "polygons_overlap",
    "point_in_polygon", "points_in_polygon", "self_intersection",
]

Point = tuple[float, float]
ZoneRule = Literal["centre", "overlap"]


@dataclasses.dataclass(frozen=True)
class Polygon:
    """One named zone in frame pixels (x right, y down); closed implicitly (last point joins the first)."""

    name: str
    points: tuple[Point, ...]

    def bounds(self) -> tuple[float, float, float, float]:
        """(x1, y1, x2, y2) of the points."""
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return min(xs), min(ys), max(xs), max(ys)


@dataclasses.dataclass(frozen=True)
class FrameZones:
    """A camera's zones resolved to pixels for one frame size. No ``include``: the whole frame is inspected
    but for the ``exclude`` polygons."""

    width: int
    height: int
    include: tuple[Polygon, ...]
    exclude: tuple[Polygon, ...]
    rule: ZoneRule
    min_overlap: float  # the overlap rule: least share of a box's area inside the inspected area


@dataclasses.dataclass(frozen=True)
class ZoneReport:
    """What one frame's event says about its camera's zones: which applied, how many detections they dropped
    (those at or above the triage ``reject`` level, i.e. that would have been tags), the classifier's crop
    (x1, y1, x2, y2 in frame pixels; None for a detector), or, when the zones could not be applied to this
    frame (a pixel zone outside the frame), ``error`` saying why: the frame is then inspected whole."""

    include: tuple[str, ...]
    exclude: tuple[str, ...]
    rule: ZoneRule
    dropped: int = 0
    crop: tuple[int, int, int, int] | None = None
    error: str | None = None

    @property
    def applied(self) -> bool:
        return self.error is None

    def to_payload(self) -> dict[str, object]:
        out: dict[str, object] = {"applied": self.applied, "include": list(self.include),
                                  "exclude": list(self.exclude), "rule": self.rule, "dropped": self.dropped}
        if self.crop is not None:
            out["crop"] = list(self.crop)
        if self.error is not None:
            out["error"] = self.error
        return out


def polygon_area(points: Sequence[Point]) -> float:
    """The area enclosed (shoelace formula; a self-intersecting polygon's signed parts may cancel)."""
    if len(points) < 3:
        return 0.0
    a = np.asarray(points, dtype=np.float64)
    x, y = a[:, 0], a[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _orient(a: Point, b: Point, c: Point) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _on_segment(a: Point, b: Point, p: Point) -> bool:
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def segments_cross(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Whether segment ab and segment cd share a point (touching counts)."""
    o1, o2, o3, o4 = _orient(a, b, c), _orient(a, b, d), _orient(c, d, a), _orient(c, d, b)
    if ((o1 > 0 > o2) or (o1 < 0 < o2)) and ((o3 > 0 > o4) or (o3 < 0 < o4)):
        return True
    return ((o1 == 0 and _on_segment(a, b, c)) or (o2 == 0 and _on_segment(a, b, d))
            or (o3 == 0 and _on_segment(c, d, a)) or (o4 == 0 and _on_segment(c, d, b)))


def _edges(points: Sequence[Point]) -> list[tuple[Point, Point]]:
    return [(points[i], points[(i + 1) % len(points)]) for i in range(len(points))]


def self_intersection(points: Sequence[Point]) -> tuple[int, int] | None:
    """The first pair of edges (by index: edge i joins point i to point i+1) that cross or touch although
    they are not neighbours, or a repeated point as (i, j); None for a simple polygon."""
    n = len(points)
    for i in range(n):
        for j in range(i + 1, n):
            if points[i] == points[j]:
                return i, j
    edges = _edges(points)
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # neighbours through the closing edge
            if segments_cross(*edges[i], *edges[j]):
                return i, j
    return None


def point_in_polygon(p: Point, points: Sequence[Point]) -> bool:
    """Whether ``p`` is strictly inside the polygon (even-odd rule; a point on an edge is not inside)."""
    inside = False
    for a, b in _edges(points):
        if _orient(a, b, p) == 0 and _on_segment(a, b, p):
            return False
        if (a[1] > p[1]) != (b[1] > p[1]):
            x = a[0] + (p[1] - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
            if p[0] < x:
                inside = not inside
    return inside


def points_in_polygon(xs: np.ndarray, ys: np.ndarray, points: Sequence[Point]) -> np.ndarray:
    """Vectorised even-odd test: a boolean array, True where (xs, ys) is inside the polygon (points on an
    edge may land either way)."""
    inside = np.zeros(np.broadcast(xs, ys).shape, dtype=bool)
    for (ax, ay), (bx, by) in _edges(points):
        if ay == by:
            continue
        crosses = (ay > ys) != (by > ys)
        x = ax + (ys - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (xs < x)
    return inside


def polygons_overlap(a: Sequence[Point], b: Sequence[Point]) -> bool:
    """Whether two simple polygons share area: an edge of one crosses an edge of the other (polygons that
    only touch along an edge or at a corner do not count), or one lies inside the other."""
    for p, q in _edges(a):
        for r, s in _edges(b):
            if _proper_cross(p, q, r, s):
                return True
    centroid_a = (sum(x for x, _ in a) / len(a), sum(y for _, y in a) / len(a))
    centroid_b = (sum(x for x, _ in b) / len(b), sum(y for _, y in b) / len(b))
    return (any(point_in_polygon(p, b) for p in a) or any(point_in_polygon(p, a) for p in b)
            or point_in_polygon(centroid_a, b) or point_in_polygon(centroid_b, a) or _same_shape(a, b))


def _proper_cross(a: Point, b: Point, c: Point, d: Point) -> bool:
    o1, o2, o3, o4 = _orient(a, b, c), _orient(a, b, d), _orient(c, d, a), _orient(c, d, b)
    return ((o1 > 0 > o2) or (o1 < 0 < o2)) and ((o3 > 0 > o4) or (o3 < 0 < o4))


def _same_shape(a: Sequence[Point], b: Sequence[Point]) -> bool:
    return set(a) == set(b)
