"""Defect-like marks on the conveyor's belt edges (``synthetic://conveyor?edge_marks=1``): a realistic source of
false positives for inspection zones to remove.

The belt's raised edges (the bands of ``RAIL`` pixels at the top and bottom of the frame, where no part ever
rides) carry scuffs, oil stains and punched holes that look like the scene's defect classes (``scratch``,
``stain``, ``hole``), drawn on a worn, lighter strip of the edge the way the parts' defects are drawn on metal.
They travel with the belt. They are NOT defects: the ground truth lists them in ``FrameTruth.decoys``, never in
``defects``, so a detection on one is a false positive.

Deterministic for a seed; pure numpy/OpenCV.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from agent.core.frame import DefectTruth

__all__ = ["EDGE_MARK_CLASSES", "EdgeMarks", "RAIL"]

RAIL = 24  # the height of each belt edge band, in pixels (agent.capture.synthetic draws them)
EDGE_MARK_CLASSES = ("scratch", "stain", "hole")
_SPACING = (150.0, 400.0)  # belt pixels between two marks on one edge


@dataclasses.dataclass(frozen=True)
class _Mark:
    label: str
    x: float  # belt coordinate of the mark's centre (the frame position is x + the belt's travel)
    top: bool  # on the top edge (else the bottom one)
    size: float
    angle: float
    tone: int  # the worn strip under the mark
    strength: float


class EdgeMarks:
    """The marks of both belt edges for one stream; :meth:`draw` paints the visible ones onto a frame."""

    def __init__(self, rng: np.random.Generator, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self._rng = rng
        self._marks: list[_Mark] = []
        # minus the belt coordinate of each edge's next mark: the first ones are already in view
        self._next = {top: float(rng.uniform(0, 120)) - width for top in (True, False)}

    def _extend(self, leftmost: float) -> None:
        """Make sure marks exist for every belt coordinate down to ``leftmost`` (the belt runs to the right, so
        new marks appear on the left)."""
        for top in (True, False):
            while -self._next[top] > leftmost - 60:
                rng = self._rng
                self._marks.append(_Mark(
                    label=EDGE_MARK_CLASSES[int(rng.integers(0, len(EDGE_MARK_CLASSES)))],
                    x=-self._next[top], top=top, size=float(rng.uniform(9, 15)),
                    angle=float(rng.uniform(-0.5, 0.5)), tone=int(rng.integers(160, 195)),
                    strength=float(rng.uniform(0.7, 1.0))))
                self._next[top] += float(rng.uniform(*_SPACING))

    def draw(self, frame: np.ndarray, travel: float) -> tuple[DefectTruth, ...]:
        """Paint the marks visible after the belt moved ``travel`` pixels onto ``frame`` (float BGR, in place);
        their boxes, clipped to the frame (a mark less than half visible is left out)."""
        self._extend(-travel)
        self._marks = [m for m in self._marks if m.x + travel - 40 < self.width]
        out: list[DefectTruth] = []
        for mark in self._marks:
            cx = mark.x + travel
            if cx + 40 < 0:
                continue
            cy = RAIL / 2.0 if mark.top else self.height - RAIL / 2.0
            box = _paint(frame, mark, cx, cy)
            x1, y1, x2, y2 = box
            cx1, cx2 = max(x1, 0.0), min(x2, float(self.width))
            if cx2 - cx1 >= 0.5 * (x2 - x1):
                out.append(DefectTruth(mark.label, (cx1, y1, cx2, y2), False, mark.strength))
        return tuple(out)


def _paint(frame: np.ndarray, mark: _Mark, cx: float, cy: float) -> tuple[float, float, float, float]:
    """Draw one mark centred at (cx, cy) on its worn patch; its box (frame pixels, unclipped)."""
    h, w = frame.shape[:2]
    half = mark.size + 6
    x1, x2 = int(math.floor(cx - half)), int(math.ceil(cx + half))
    y1, y2 = int(max(cy - RAIL / 2.0, 0)), int(min(cy + RAIL / 2.0, h))
    fx1, fx2 = max(x1, 0), min(x2, w)
    if fx2 <= fx1:
        return float(x1), float(y1), float(x2), float(y2)
    region = frame[y1:y2, fx1:fx2]
    ph, pw = region.shape[:2]
    ox, oy = cx - fx1, cy - y1
    # the worn strip: lighter, like the parts' metal, soft at its ends
    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
    fade = np.clip(1.0 - (np.abs(xx - ox) / half) ** 4, 0.0, 1.0)[:, :, None]
    region[:] = region * (1 - fade) + (mark.tone + 6.0 * np.sin(xx / 3.0))[:, :, None] * fade
    s = mark.strength
    layer = np.zeros((ph, pw), np.float32)
    r = mark.size / 2.0
    if mark.label == "scratch":
        dx, dy = math.cos(mark.angle) * mark.size * 0.8, math.sin(mark.angle) * r
        cv2.line(layer, (round(ox - dx), round(oy - dy)), (round(ox + dx), round(oy + dy)), 1.0, 2, cv2.LINE_AA)
        region -= (layer * 120.0 * s)[:, :, None]
        bx, by = abs(dx) + 4, abs(dy) + 4
    elif mark.label == "hole":
        cv2.circle(layer, (round(ox), round(oy)), max(3, round(r * 0.8)), 1.0, -1, cv2.LINE_AA)
        region[:] = region * (1 - layer * s * 0.85)[:, :, None] + (layer * s * 0.85 * 25.0)[:, :, None]
        bx = by = r * 0.8 + 3
    else:  # stain
        cv2.ellipse(layer, (round(ox), round(oy)), (max(3, round(r)), max(3, round(r * 0.7))),
                    math.degrees(mark.angle), 0, 360, 1.0, -1, cv2.LINE_AA)
        a = (cv2.GaussianBlur(layer, (5, 5), 0) * s * 0.8)[:, :, None]
        region[:] = region * (1 - a) + np.array([35.0, 75.0, 120.0], np.float32)[None, None, :] * a
        bx, by = r + 3, r * 0.7 + 3
    return cx - bx, max(cy - by, 0.0), cx + bx, min(cy + by, float(h))
