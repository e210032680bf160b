"""A synthetic conveyor-belt inspection scene with ground truth.

Parts (round discs and rectangular plates) ride a belt from left to right. Some
carry defects of four kinds (see :data:`DEFECT_CLASSES`); a share of them are
drawn faint on purpose, so that a prefilter trained on this scene is unsure
about them and a frame lands in the triage band.

Two ways to use it:

* :class:`ConveyorScene` renders a continuous stream (``synthetic://conveyor``):
  parts enter on the left, leave on the right, and every frame comes with the
  ground truth of what is visible in it.
* :func:`render_still` renders one independent frame with parts placed fully
  inside the picture: the unit of the labelled training dataset.

Everything is deterministic for a given seed. Pure numpy/OpenCV, no I/O.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from agent.capture.edge_marks import EdgeMarks
from agent.core.frame import DefectTruth, FrameTruth

DEFECT_CLASSES: tuple[str, ...] = ("scratch", "hole", "stain", "missing")
"""Class names, index = YOLO class id. The shipped detector uses this order."""

BELT_GRAY = 58


@dataclasses.dataclass(frozen=True)
class _Scratch:
    c: tuple[float, float]
    angle: float
    length: float
    bend: float
    thick: int
    light: bool


@dataclasses.dataclass(frozen=True)
class _Hole:
    c: tuple[float, float]
    r: float


@dataclasses.dataclass(frozen=True)
class _Stain:
    blobs: tuple[tuple[float, float, float, float, float], ...]  # cx, cy, axis x, axis y, angle
    colour: tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class _Bite:
    c: tuple[float, float]  # a point on the part's rim
    r: float


@dataclasses.dataclass
class _Defect:
    label: str
    strength: float
    # geometry in part-local coordinates (origin = part centre)
    shape: _Scratch | _Hole | _Stain | _Bite


@dataclasses.dataclass
class _Part:
    shape: str  # "disc" | "plate"
    half_w: float
    half_h: float
    tone: int
    x: float  # centre, frame pixels
    y: float
    defects: list[_Defect]
    texture_seed: int


@dataclasses.dataclass(frozen=True)
class SceneSettings:
    """Knobs of the scene. The defaults are the ones the shipped model was trained on."""

    width: int = 640
    height: int = 480
    speed_px: float = 6.0  # belt travel per frame
    defect_rate: float = 0.45  # share of parts with at least one defect
    faint_rate: float = 0.2  # share of defects drawn faint
    noise_sigma: float = 3.0
    edge_marks: bool = False  # defect-like marks on the belt's edges that are not defects (agent.capture.edge_marks)


DEFAULT_SETTINGS = SceneSettings()


def _new_part(rng: np.random.Generator, settings: SceneSettings) -> _Part:
    shape = "disc" if rng.random() < 0.55 else "plate"
    if shape == "disc":
        r = float(rng.uniform(50, 72))
        half_w = half_h = r
    else:
        half_w = float(rng.uniform(55, 80))
        half_h = float(rng.uniform(40, 60))
    part = _Part(
        shape=shape,
        half_w=half_w,
        half_h=half_h,
        tone=int(rng.integers(165, 205)),
        x=0.0,
        y=0.0,
        defects=[],
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )
    if rng.random() < settings.defect_rate:
        count = 1 if rng.random() < 0.75 else 2
        for _ in range(count):
            part.defects.append(_new_defect(rng, part, settings))
    return part


def _point_inside(rng: np.random.Generator, part: _Part, margin: float) -> tuple[float, float]:
    """A random point inside the part, at least ``margin`` from its edge."""
    while True:
        x = float(rng.uniform(-part.half_w + margin, part.half_w - margin))
        y = float(rng.uniform(-part.half_h + margin, part.half_h - margin))
        if part.shape == "plate" or math.hypot(x, y) <= part.half_w - margin:
            return x, y


def _new_defect(rng: np.random.Generator, part: _Part, settings: SceneSettings) -> _Defect:
    label = DEFECT_CLASSES[int(rng.integers(0, len(DEFECT_CLASSES)))]
    faint = rng.random() < settings.faint_rate
    strength = float(rng.uniform(0.22, 0.38) if faint else rng.uniform(0.65, 1.0))
    shape: _Scratch | _Hole | _Stain | _Bite
    if label == "scratch":
        cx, cy = _point_inside(rng, part, 28)
        angle = float(rng.uniform(0, math.pi))
        length = float(rng.uniform(26, 50))
        bend = float(rng.uniform(-6, 6))
        shape = _Scratch((cx, cy), angle, length, bend, int(rng.integers(2, 4)), bool(rng.random() < 0.3))
    elif label == "hole":
        cx, cy = _point_inside(rng, part, 18)
        shape = _Hole((cx, cy), float(rng.uniform(6, 12)))
    elif label == "stain":
        cx, cy = _point_inside(rng, part, 22)
        blobs = tuple(
            (cx + float(rng.uniform(-7, 7)), cy + float(rng.uniform(-7, 7)),
             float(rng.uniform(6, 13)), float(rng.uniform(5, 11)), float(rng.uniform(0, 180)))
            for _ in range(int(rng.integers(2, 5)))
        )
        colour = (int(rng.integers(20, 50)), int(rng.integers(60, 95)), int(rng.integers(100, 140)))
        shape = _Stain(blobs, colour)
    else:  # missing: a bite out of the rim
        theta = float(rng.uniform(0, 2 * math.pi))
        if part.shape == "disc":
            ex, ey = part.half_w * math.cos(theta), part.half_h * math.sin(theta)
        else:
            # a point on the rectangle's border
            t = float(rng.uniform(-1, 1))
            side = int(rng.integers(0, 4))
            ex, ey = [
                (t * part.half_w, -part.half_h),
                (t * part.half_w, part.half_h),
                (-part.half_w, t * part.half_h),
                (part.half_w, t * part.half_h),
            ][side]
        shape = _Bite((ex, ey), float(rng.uniform(13, 22)))
    return _Defect(label=label, strength=strength, shape=shape)


def _part_mask_and_image(part: _Part) -> tuple[np.ndarray, np.ndarray, list[DefectTruth], int, int]:
    """Draw a part on its own patch. Returns (alpha mask, BGR patch, defects with
    patch-local boxes, patch origin offset x, y relative to the part centre)."""
    pad = 4
    w = int(math.ceil(part.half_w * 2)) + 2 * pad
    h = int(math.ceil(part.half_h * 2)) + 2 * pad
    ox, oy = w / 2.0, h / 2.0
    mask = np.zeros((h, w), np.float32)
    if part.shape == "disc":
        cv2.circle(mask, (int(round(ox)), int(round(oy))), int(round(part.half_w)), 1.0, -1, cv2.LINE_AA)
    else:
        p1 = (int(round(ox - part.half_w)), int(round(oy - part.half_h)))
        p2 = (int(round(ox + part.half_w)), int(round(oy + part.half_h)))
        cv2.rectangle(mask, p1, p2, 1.0, -1, cv2.LINE_AA)

    trng = np.random.default_rng(part.texture_seed)
    # brushed metal: horizontal streak noise plus a soft diagonal light gradient
    streaks = cv2.blur(trng.normal(0, 9, (h, w)).astype(np.float32), (15, 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gradient = ((xx - ox) / w - (yy - oy) / h) * 22.0
    base = part.tone + streaks + gradient
    img = np.repeat(base[:, :, None], 3, axis=2)
    img[:, :, 0] += 6  # a slightly cool metal
    # darker rim
    edge = cv2.erode(mask, np.ones((5, 5), np.uint8), iterations=1)
    img -= ((mask - edge) * 45)[:, :, None]

    truths: list[DefectTruth] = []
    for d in part.defects:
        box, mask = _draw_defect(d, img, mask, ox, oy)
        if box is not None:
            truths.append(DefectTruth(d.label, box, d.strength < 0.4, d.strength))
    return mask, np.clip(img, 0, 255), truths, int(round(ox)), int(round(oy))


def _draw_defect(
    d: _Defect, img: np.ndarray, mask: np.ndarray, ox: float, oy: float
) -> tuple[tuple[float, float, float, float] | None, np.ndarray]:
    s = d.strength
    h, w = mask.shape
    g = d.shape
    if isinstance(g, _Scratch):
        cx, cy = g.c
        angle, length, bend, thick = g.angle, g.length, g.bend, g.thick
        pts = []
        for t in np.linspace(-0.5, 0.5, 9):
            px = cx + ox + t * length * math.cos(angle) - (1 - 4 * t * t) * bend * math.sin(angle)
            py = cy + oy + t * length * math.sin(angle) + (1 - 4 * t * t) * bend * math.cos(angle)
            pts.append((px, py))
        layer = np.zeros((h, w), np.float32)
        cv2.polylines(layer, [np.round(np.array(pts)).astype(np.int32)], False, 1.0, thick, cv2.LINE_AA)
        delta = 110.0 if g.light else -120.0
        img += (layer * delta * s)[:, :, None]
        arr = np.array(pts)
        x1, y1 = arr.min(axis=0) - thick - 2
        x2, y2 = arr.max(axis=0) + thick + 2
        return (float(x1), float(y1), float(x2), float(y2)), mask
    if isinstance(g, _Hole):
        cx, cy = g.c
        r = g.r
        layer = np.zeros((h, w), np.float32)
        centre = (int(round(cx + ox)), int(round(cy + oy)))
        cv2.circle(layer, centre, int(round(r)), 1.0, -1, cv2.LINE_AA)
        rim = np.zeros((h, w), np.float32)
        cv2.circle(rim, (centre[0] - 1, centre[1] - 1), int(round(r + 2)), 1.0, 2, cv2.LINE_AA)
        img += (rim * 50.0 * s)[:, :, None]
        img[:] = img * (1 - layer * s * 0.85)[:, :, None] + (layer * s * 0.85 * 25.0)[:, :, None]
        m = r + 3
        return (cx + ox - m, cy + oy - m, cx + ox + m, cy + oy + m), mask
    if isinstance(g, _Stain):
        colour = np.array(g.colour, np.float32)
        layer = np.zeros((h, w), np.float32)
        for bx, by, ax, ay, ang in g.blobs:
            cv2.ellipse(layer, (int(round(bx + ox)), int(round(by + oy))),
                        (int(round(ax)), int(round(ay))), ang, 0, 360, 1.0, -1, cv2.LINE_AA)
        layer = cv2.GaussianBlur(layer, (5, 5), 0) * mask
        a = (layer * s * 0.8)[:, :, None]
        img[:] = img * (1 - a) + colour[None, None, :] * a
        ys, xs = np.nonzero(layer > 0.1)
        if len(xs) == 0:
            return None, mask
        return (float(xs.min()) - 1, float(ys.min()) - 1, float(xs.max()) + 2, float(ys.max()) + 2), mask
    # missing: cut a bite out of the part mask; faint = a shallow chip
    ex, ey = g.c
    r = g.r * (0.45 + 0.55 * s)
    cut = np.zeros((h, w), np.float32)
    cv2.circle(cut, (int(round(ex + ox)), int(round(ey + oy))), int(round(r)), 1.0, -1, cv2.LINE_AA)
    removed = mask * cut
    ys, xs = np.nonzero(removed > 0.3)
    new_mask = mask * (1 - cut)
    if len(xs) == 0:
        return None, new_mask
    return (float(xs.min()) - 2, float(ys.min()) - 2, float(xs.max()) + 3, float(ys.max()) + 3), new_mask


def _belt(width: int, height: int, offset: float) -> np.ndarray:
    """The belt: dark rubber with transverse slats that move with ``offset``."""
    xs = (np.arange(width, dtype=np.float32) - offset) % 48.0
    slats = np.where(xs < 3.0, -14.0, 0.0).astype(np.float32)
    row = BELT_GRAY + slats
    img = np.repeat(np.repeat(row[None, :, None], height, axis=0), 3, axis=2)
    # rails at the top and bottom
    img[:24] = 92.0
    img[-24:] = 92.0
    return img


def _composite(frame: np.ndarray, part: _Part) -> list[DefectTruth]:
    """Draw ``part`` onto ``frame`` in place; return its defects with frame boxes
    (clipped to the frame; defects less than half visible are left out)."""
    mask, patch, truths, ox, oy = _part_mask_and_image(part)
    fh, fw = frame.shape[:2]
    x0 = int(round(part.x)) - ox
    y0 = int(round(part.y)) - oy
    ph, pw = mask.shape
    fx1, fy1 = max(x0, 0), max(y0, 0)
    fx2, fy2 = min(x0 + pw, fw), min(y0 + ph, fh)
    if fx1 >= fx2 or fy1 >= fy2:
        return []
    m = mask[fy1 - y0:fy2 - y0, fx1 - x0:fx2 - x0, None]
    # a soft shadow first, then the part
    shadow = cv2.GaussianBlur(mask, (9, 9), 0)[fy1 - y0:fy2 - y0, fx1 - x0:fx2 - x0, None]
    region = frame[fy1:fy2, fx1:fx2]
    region *= 1 - 0.35 * shadow
    region[:] = region * (1 - m) + patch[fy1 - y0:fy2 - y0, fx1 - x0:fx2 - x0] * m
    out = []
    for t in truths:
        bx1, by1, bx2, by2 = t.box
        gx1, gy1, gx2, gy2 = bx1 + x0, by1 + y0, bx2 + x0, by2 + y0
        cx1, cy1 = max(gx1, 0.0), max(gy1, 0.0)
        cx2, cy2 = min(gx2, float(fw)), min(gy2, float(fh))
        full = (gx2 - gx1) * (gy2 - gy1)
        if cx2 <= cx1 or cy2 <= cy1 or (cx2 - cx1) * (cy2 - cy1) < 0.5 * full:
            continue
        out.append(dataclasses.replace(t, box=(cx1, cy1, cx2, cy2)))
    return out


def _finish(frame: np.ndarray, rng: np.random.Generator, settings: SceneSettings) -> np.ndarray:
    h, w = frame.shape[:2]
    # uneven lighting (a lamp above the centre of the belt) and sensor noise
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1.08 - 0.25 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
    frame *= light[:, :, None]
    frame += rng.normal(0, settings.noise_sigma, frame.shape).astype(np.float32)
    out: np.ndarray = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def _part_box(part: _Part, width: int, height: int) -> tuple[float, float, float, float]:
    return (max(part.x - part.half_w, 0.0), max(part.y - part.half_h, 0.0),
            min(part.x + part.half_w, float(width)), min(part.y + part.half_h, float(height)))


def render_still(rng: np.random.Generator, settings: SceneSettings = DEFAULT_SETTINGS) -> tuple[np.ndarray, FrameTruth]:
    """One independent frame: 0–3 parts placed fully inside, not overlapping."""
    w, h = settings.width, settings.height
    frame = _belt(w, h, float(rng.uniform(0, 48)))
    parts: list[_Part] = []
    for _ in range(int(rng.choice([0, 1, 2, 2, 3, 3]))):
        p = _new_part(rng, settings)
        for _attempt in range(20):
            p.x = float(rng.uniform(p.half_w + 4, w - p.half_w - 4))
            p.y = float(rng.uniform(max(p.half_h + 26, 0), h - p.half_h - 26))
            if all(abs(p.x - q.x) > p.half_w + q.half_w + 6 or abs(p.y - q.y) > p.half_h + q.half_h + 6
                   for q in parts):
                parts.append(p)
                break
    defects: list[DefectTruth] = []
    for p in parts:
        defects.extend(_composite(frame, p))
    return _finish(frame, rng, settings), FrameTruth(
        parts=tuple(_part_box(p, w, h) for p in parts), defects=tuple(defects))


class ConveyorScene:
    """A continuous belt: call :meth:`next_frame` for each frame, in order."""

    def __init__(self, seed: int = 0, settings: SceneSettings = DEFAULT_SETTINGS) -> None:
        self.settings = settings
        self._rng = np.random.default_rng(seed)
        self._parts: list[_Part] = []
        self._offset = 0.0
        self._next_gap = 0.0
        self.frame_index = 0
        # its own generator, so the parts and defects of a seed are the same with or without the marks
        self._edge = EdgeMarks(np.random.default_rng([seed, 1]), settings.width, settings.height) \
            if settings.edge_marks else None

    def next_frame(self) -> tuple[np.ndarray, FrameTruth]:
        s = self.settings
        self._offset += s.speed_px
        for p in self._parts:
            p.x += s.speed_px
        self._parts = [p for p in self._parts if p.x - p.half_w < s.width]
        self._next_gap -= s.speed_px
        if self._next_gap <= 0:
            p = _new_part(self._rng, s)
            p.x = -p.half_w
            p.y = float(self._rng.uniform(p.half_h + 28, s.height - p.half_h - 28))
            self._parts.append(p)
            self._next_gap = 2 * p.half_w + float(self._rng.uniform(40, 200))
        frame = _belt(s.width, s.height, self._offset)
        decoys = self._edge.draw(frame, self._offset) if self._edge is not None else ()
        defects: list[DefectTruth] = []
        for p in self._parts:
            defects.extend(_composite(frame, p))
        self.frame_index += 1
        visible = tuple(_part_box(p, s.width, s.height) for p in self._parts
                        if p.x + p.half_w > 0 and p.x - p.half_w < s.width)
        return _finish(frame, self._rng, s), FrameTruth(parts=visible, defects=tuple(defects), decoys=decoys)
