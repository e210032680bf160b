"""A synthetic grey surface-inspection scene with ground truth: the second synthetic world.

Unlike the conveyor (colour, whole parts on a belt, 640x480), this is a single-channel
close-up of a textured surface, 640x640 by default, as a mono line camera sees a sheet
or web passing under it. Every frame draws a new patch of surface with its own
texture, one of three families with randomised grain, tone, direction and lighting:

* ``rolled``: rolled sheet, streaks along the rolling direction and a low-frequency mottle;
* ``ground``: machined (ground) metal, fine parallel tool marks at an angle;
* ``woven``: plain-woven fabric, alternating warp and weft threads with a wavy drift.

Defects are small, of six kinds (:data:`SURFACE_CLASSES`) at varied scales, and a share
of them are faint (drawing contrast below 0.4): ``scratch`` (a thin, long, slightly
curved line, light or dark), ``pit`` (a cluster of tiny dark holes), ``stain`` (a soft
low-contrast blot), ``crack`` (a jagged dark branching line), ``inclusion`` (a broken
dark streak along the rolling direction) and ``dent`` (a shallow hollow, lit from one
side). About half of the frames are defect-free.

* :func:`render_surface` renders one frame (grey ``uint8`` HxW) and its
  :class:`~agent.core.frame.FrameTruth` (``parts`` is empty: the surface fills the frame).
* :class:`SurfaceScene` is the stream (``synthetic://surface``): the surface advances by
  one field of view per frame, so each frame is a new patch.

Everything is deterministic for a given seed. Pure numpy/OpenCV, no I/O.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from agent.core.frame import DefectTruth, FrameTruth

SURFACE_CLASSES: tuple[str, ...] = ("scratch", "pit", "stain", "crack", "inclusion", "dent")
"""Class names of the surface scene, index = YOLO class id."""
SURFACE_SEVERITY: tuple[str, ...] = ("crack", "inclusion", "pit", "dent", "scratch", "stain")
"""Surface defect classes, most severe first: a crack or an inclusion weakens the material, a pit or a dent
changes its shape, a scratch or a stain is cosmetic."""
TEXTURES: tuple[str, ...] = ("rolled", "ground", "woven")

Box = tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class SurfaceSettings:
    """Knobs of the surface scene."""

    width: int = 640
    height: int = 640
    defect_rate: float = 0.5  # share of frames with at least one defect
    faint_rate: float = 0.25  # share of defects drawn faint
    noise_sigma: float = 2.5


DEFAULT_SURFACE = SurfaceSettings()


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates as (h, 1) and (1, w) float32 arrays, to broadcast."""
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


def _upsampled_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth noise of unit-ish amplitude with features about ``cell`` pixels wide."""
    small = rng.normal(0, 1, (max(2, h // cell + 2), max(2, w // cell + 2))).astype(np.float32)
    out: np.ndarray = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return out


def _rolled(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    streak_len = int(rng.integers(21, 91)) | 1
    streaks = cv2.blur(rng.normal(0, float(rng.uniform(5, 11)), (h, w)).astype(np.float32), (streak_len, 1))
    mottle = _upsampled_noise(rng, h, w, int(rng.integers(40, 120))) * float(rng.uniform(3, 9))
    tex = streaks * 2.2 + mottle
    return tex.T.copy() if rng.random() < 0.3 and h == w else tex  # some sheets run vertically


def _ground(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    angle = float(rng.uniform(0, math.pi))
    yy, xx = _grid(h, w)
    v = xx * math.sin(angle) - yy * math.cos(angle)  # across the tool marks
    v -= v.min()
    length = int(math.ceil(float(v.max()))) + 2
    profile = cv2.GaussianBlur(rng.normal(0, 1, (1, length)).astype(np.float32), (0, 0), float(rng.uniform(0.6, 1.6)))
    marks = profile[0][v.astype(np.int32)] * float(rng.uniform(10, 20))
    period = float(rng.uniform(14, 40))  # the feed of the tool: a faint periodic band
    bands = np.sin(v * (2 * math.pi / period)).astype(np.float32) * float(rng.uniform(1, 4))
    fine = rng.normal(0, 2.0, (h, w)).astype(np.float32)
    out: np.ndarray = marks + bands + fine
    return out


def _woven(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    pitch = float(rng.uniform(6, 13))
    yy, xx = _grid(h, w)
    drift = _upsampled_noise(rng, h, w, 160) * float(rng.uniform(1, 4))
    angle = float(rng.uniform(-0.08, 0.08))
    u = (xx * math.cos(angle) + yy * math.sin(angle) + drift) * (1 / pitch)
    v = (yy * math.cos(angle) - xx * math.sin(angle) + drift * 0.5) * (1 / pitch)
    ui, vi = np.floor(u), np.floor(v)
    # a thread is bright across its middle, dark at the gaps: sin(pi * frac), looked up on 64 steps
    arch = np.sin(np.linspace(0, math.pi, 65, dtype=np.float32)[:64] + math.pi / 128)
    warp = arch[((u - ui) * 64).astype(np.int32).clip(0, 63)]
    weft = arch[((v - vi) * 64).astype(np.int32).clip(0, 63)]
    over = (ui + vi).astype(np.int32) % 2 == 0
    amp = float(rng.uniform(14, 26))
    out: np.ndarray = (np.where(over, warp, weft) * amp).astype(np.float32)
    out += _upsampled_noise(rng, h, w, 60) * float(rng.uniform(2, 5)) + rng.normal(0, 2.0, (h, w)).astype(np.float32)
    return out


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    family = TEXTURES[int(rng.integers(0, len(TEXTURES)))]
    tex = {"rolled": _rolled, "ground": _ground, "woven": _woven}[family](rng, h, w)
    tone = float(rng.uniform(95, 165))
    yy, xx = _grid(h, w)
    angle = float(rng.uniform(0, 2 * math.pi))
    light = ((xx / w - 0.5) * math.cos(angle) + (yy / h - 0.5) * math.sin(angle)) * float(rng.uniform(0, 40))
    out: np.ndarray = tone + tex + light
    return out


# -- defects: each draws into ``img`` (float HxW) and returns its box, or None when nothing is visible ---------


def _scratch(rng: np.random.Generator, img: np.ndarray, c: tuple[float, float], s: float) -> Box | None:
    length = float(rng.uniform(30, 260))
    angle = float(rng.uniform(0, math.pi))
    bend = float(rng.uniform(-0.12, 0.12)) * length
    thick = 1 if rng.random() < 0.6 else 2
    t = np.linspace(-0.5, 0.5, 17)
    px = c[0] + t * length * math.cos(angle) - (1 - 4 * t * t) * bend * math.sin(angle)
    py = c[1] + t * length * math.sin(angle) + (1 - 4 * t * t) * bend * math.cos(angle)
    layer = np.zeros_like(img)
    cv2.polylines(layer, [np.round(np.stack([px, py], 1)).astype(np.int32)], False, 1.0, thick, cv2.LINE_AA)
    img += layer * (75.0 if rng.random() < 0.4 else -80.0) * s
    return _box_of(layer, 0.2, pad=2)


def _pit(rng: np.random.Generator, img: np.ndarray, c: tuple[float, float], s: float) -> Box | None:
    layer, rim = np.zeros_like(img), np.zeros_like(img)
    spread = float(rng.uniform(3, 22))
    for _ in range(int(rng.integers(1, 6))):
        x, y = c[0] + float(rng.normal(0, spread / 2)), c[1] + float(rng.normal(0, spread / 2))
        r = int(rng.integers(2, 7))
        cv2.circle(layer, (round(x), round(y)), r, 1.0, -1, cv2.LINE_AA)
        cv2.circle(rim, (round(x) + 1, round(y) + 1), r + 1, 1.0, 1, cv2.LINE_AA)
    img += rim * 35.0 * s
    img[:] = img * (1 - layer * 0.8 * s) + layer * 0.8 * s * 30.0
    return _box_of(np.maximum(layer, rim), 0.2, pad=1)


def _stain(rng: np.random.Generator, img: np.ndarray, c: tuple[float, float], s: float) -> Box | None:
    layer = np.zeros_like(img)
    size = float(rng.uniform(15, 60))
    for _ in range(int(rng.integers(2, 6))):
        cx, cy = c[0] + float(rng.normal(0, size / 3)), c[1] + float(rng.normal(0, size / 3))
        axes = (max(3, round(float(rng.uniform(0.3, 0.7)) * size)), max(3, round(float(rng.uniform(0.3, 0.7)) * size)))
        cv2.ellipse(layer, (round(cx), round(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA)
    layer[:] = cv2.GaussianBlur(layer, (0, 0), size / 8)
    img += layer * (-48.0 if rng.random() < 0.75 else 36.0) * s
    return _box_of(layer, 0.1, pad=1)


def _crack(rng: np.random.Generator, img: np.ndarray, c: tuple[float, float], s: float) -> Box | None:
    layer = np.zeros_like(img)
    total = float(rng.uniform(25, 120))
    heading = float(rng.uniform(0, 2 * math.pi))
    for branch in range(1 if rng.random() < 0.5 else 2):
        pts = [c]
        steps = int(rng.integers(6, 14))
        h = heading + (float(rng.uniform(0.5, 1.2)) * (1 if rng.random() < 0.5 else -1) if branch else 0.0)
        step = total / steps * (0.5 if branch else 1.0)
        for _ in range(steps):
            h += float(rng.normal(0, 0.5))
            x, y = pts[-1]
            pts.append((x + step * math.cos(h), y + step * math.sin(h)))
        cv2.polylines(layer, [np.round(np.array(pts)).astype(np.int32)], False, 1.0, 1 + int(rng.random() < 0.4),
                      cv2.LINE_AA)
    img += layer * -95.0 * s
    return _box_of(layer, 0.2, pad=2)


def _inclusion(rng: np.random.Generator, img: np.ndarray, c: tuple[float, float], s: float) -> Box | None:
    layer = np.zeros_like(img)
    length = float(rng.uniform(40, 220))
    width = int(rng.integers(2, 6))
    angle = float(rng.normal(0, 0.05)) + (math.pi / 2 if rng.random() < 0.3 else 0.0)
    x, y = c[0] - length / 2 * math.cos(angle), c[1] - length / 2 * math.sin(angle)
    done = 0.0
    while done < length:  # broken into segments with gaps
        seg = min(float(rng.uniform(10, 60)), length - done)
        x2, y2 = x + seg * math.cos(angle), y + seg * math.sin(angle)
        cv2.line(layer, (round(x), round(y)), (round(x2), round(y2)), 1.0, width, cv2.LINE_AA)
        gap = float(rng.uniform(2, 12))
        x, y = x2 + gap * math.cos(angle), y2 + gap * math.sin(angle)
        done += seg + gap
    layer[:] = cv2.GaussianBlur(layer, (0, 0), 0.8)
    img += layer * -70.0 * s
    return _box_of(layer, 0.2, pad=2)


def _dent(rng: np.random.Generator, img: np.ndarray, c: tuple[float, float], s: float) -> Box | None:
    r = float(rng.uniform(8, 30))
    h, w = img.shape
    x1, y1 = max(0, int(c[0] - 2 * r)), max(0, int(c[1] - 2 * r))
    x2, y2 = min(w, int(c[0] + 2 * r) + 1), min(h, int(c[1] + 2 * r) + 1)
    if x2 <= x1 or y2 <= y1:
        return None
    yy, xx = np.mgrid[y1:y2, x1:x2].astype(np.float32)
    dx, dy = (xx - c[0]) / r, (yy - c[1]) / r
    bowl = np.exp(-(dx * dx + dy * dy) * 1.5)
    light = float(rng.uniform(0, 2 * math.pi))  # the hollow's far wall catches the light
    shade = (dx * math.cos(light) + dy * math.sin(light)) * bowl
    img[y1:y2, x1:x2] += shade * 70.0 * s - bowl * 8.0 * s
    return (max(0.0, c[0] - 1.4 * r), max(0.0, c[1] - 1.4 * r), min(float(w), c[0] + 1.4 * r),
            min(float(h), c[1] + 1.4 * r))


_DRAW = {"scratch": _scratch, "pit": _pit, "stain": _stain, "crack": _crack, "inclusion": _inclusion, "dent": _dent}


def _box_of(layer: np.ndarray, threshold: float, pad: int) -> Box | None:
    ys, xs = np.nonzero(layer > threshold)
    if len(xs) == 0:
        return None
    h, w = layer.shape
    return (max(0.0, float(xs.min()) - pad), max(0.0, float(ys.min()) - pad),
            min(float(w), float(xs.max()) + 1 + pad), min(float(h), float(ys.max()) + 1 + pad))


def render_surface(rng: np.random.Generator,
                   settings: SurfaceSettings = DEFAULT_SURFACE) -> tuple[np.ndarray, FrameTruth]:
    """One frame: a grey ``uint8`` HxW image and its ground truth (defect boxes in pixels)."""
    w, h = settings.width, settings.height
    img = _texture(rng, h, w)
    count = 0
    if rng.random() < settings.defect_rate:
        count = int(rng.choice([1, 1, 1, 1, 1, 2, 2, 2, 3, 3]))
    defects: list[DefectTruth] = []
    margin = min(w, h) * 0.06
    for _ in range(count):
        label = SURFACE_CLASSES[int(rng.integers(0, len(SURFACE_CLASSES)))]
        faint = bool(rng.random() < settings.faint_rate)
        strength = float(rng.uniform(0.25, 0.38) if faint else rng.uniform(0.6, 1.0))
        centre = (float(rng.uniform(margin, w - margin)), float(rng.uniform(margin, h - margin)))
        box = _DRAW[label](rng, img, centre, strength)
        if box is not None and box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
            defects.append(DefectTruth(label, box, faint, strength))
    img += rng.normal(0, settings.noise_sigma, img.shape).astype(np.float32)
    out: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    return out, FrameTruth(parts=(), defects=tuple(defects))


class SurfaceScene:
    """The surface stream: call :meth:`next_frame` for each frame, in order (each is a new patch)."""

    def __init__(self, seed: int = 0, settings: SurfaceSettings = DEFAULT_SURFACE) -> None:
        self.settings = settings
        self._rng = np.random.default_rng(seed)
        self.frame_index = 0

    def next_frame(self) -> tuple[np.ndarray, FrameTruth]:
        """The next grey frame and its ground truth."""
        self.frame_index += 1
        return render_surface(self._rng, self.settings)
