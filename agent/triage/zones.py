"""Inspection zones applied to a frame: which detections are inside the inspected area, and the crop a
classifier (or an anomaly model) sees. Pure logic on numpy/OpenCV, no I/O but one log line per camera and
frame size when its zones cannot be applied.

:class:`ZoneMask` rasterises a :class:`agent.core.zones.FrameZones` once per frame size: the inspected area
(the include polygons, or the whole frame without any, less the exclude polygons; a pixel belongs to a polygon
when its centre does) as a 0/1 mask with its
integral image, so both rules cost O(1) per box:

* ``centre``: a box counts when the pixel under its centre is inspected;
* ``overlap``: when at least ``min_overlap`` of the box's pixels are.

:class:`CameraZones` keeps one camera's masks by frame size and checks what only the frame can tell: a pixel
zone outside the frame, an include and an exclude in different units that overlap, zones that leave no pixel
to inspect. Such a camera's frames are inspected whole (a misplaced ignore zone must not hide a defect) and
their events say why (``ZoneReport.error``); the error is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import cv2
import numpy as np

from agent.config.zones import ZonesConfig
from agent.core.detections import Detection
from agent.core.zones import FrameZones, Polygon, ZoneReport, polygons_overlap

__all__ = ["CameraZones", "ZoneMask"]

log = logging.getLogger(__name__)


def _fill(mask: np.ndarray, polygon: Polygon, value: int) -> None:
    """Set the pixels whose centres are inside ``polygon`` by the even-odd rule on (x + 0.5, y + 0.5), the same
    as :func:`agent.core.zones.points_in_polygon` (a zone from 0 to 20 covers exactly rows 0..19): per row, the
    spans between pairs of edge crossings."""
    h, w = mask.shape
    ys = np.arange(h, dtype=np.float64) + 0.5
    crossings = []
    for (ax, ay), (bx, by) in zip(polygon.points, polygon.points[1:] + polygon.points[:1], strict=True):
        if ay != by:
            x = ax + (ys - ay) * (bx - ax) / (by - ay)
            crossings.append(np.where((ay > ys) != (by > ys), x, np.inf))
    if not crossings:
        return
    xs = np.sort(np.stack(crossings, axis=1), axis=1)  # rows x crossings, the missing ones (inf) last
    pairs = xs.shape[1] // 2  # crossings come in pairs on every row; an odd last column is all inf
    starts = np.clip(np.ceil(xs[:, 0:2 * pairs:2] - 0.5), 0, w)
    ends = np.clip(np.ceil(xs[:, 1:2 * pairs:2] - 0.5), 0, w)
    for row in np.nonzero(np.isfinite(xs[:, 0]))[0]:
        for a, b in zip(starts[row], ends[row], strict=True):
            if a < b:
                mask[row, int(a):int(b)] = value


class ZoneMask:
    """One frame size's inspected area (see the module doc)."""

    def __init__(self, zones: FrameZones) -> None:
        self.zones = zones
        h, w = zones.height, zones.width
        mask = np.zeros((h, w), np.uint8)
        if zones.include:
            for polygon in zones.include:
                _fill(mask, polygon, 1)
        else:
            mask[:] = 1
        for polygon in zones.exclude:
            _fill(mask, polygon, 0)
        self.mask = mask
        self._integral = cv2.integral(mask)  # (h+1, w+1): sum of mask[:y, :x]
        self.area = int(self._integral[h, w])
        self.crop_box = self._crop_box()

    def _crop_box(self) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2), x2/y2 exclusive: the bounding box of the inspected pixels."""
        rows, cols = np.flatnonzero(self.mask.any(axis=1)), np.flatnonzero(self.mask.any(axis=0))
        if len(rows) == 0:
            return 0, 0, self.zones.width, self.zones.height
        return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1

    def inside_share(self, box: tuple[float, float, float, float]) -> float:
        """The share of the box's pixels (clipped to the frame) that are inspected; 0 for an empty box."""
        h, w = self.zones.height, self.zones.width
        x1, y1 = min(max(int(np.floor(box[0])), 0), w), min(max(int(np.floor(box[1])), 0), h)
        x2, y2 = min(max(int(np.ceil(box[2])), 0), w), min(max(int(np.ceil(box[3])), 0), h)
        if x2 <= x1 or y2 <= y1:
            return 0.0
        ii = self._integral
        inside = int(ii[y2, x2]) - int(ii[y1, x2]) - int(ii[y2, x1]) + int(ii[y1, x1])
        return inside / ((x2 - x1) * (y2 - y1))

    def keeps(self, box: tuple[float, float, float, float]) -> bool:
        """Whether a detection with this box (frame pixels) is inside the inspected area, by the zones' rule."""
        if self.zones.rule == "overlap":
            return self.inside_share(box) >= self.zones.min_overlap - 1e-9
        cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        x, y = int(np.floor(cx)), int(np.floor(cy))
        return 0 <= x < self.zones.width and 0 <= y < self.zones.height and bool(self.mask[y, x])

    def split(self, detections: Iterable[Detection]) -> tuple[tuple[Detection, ...], tuple[Detection, ...]]:
        """(kept, dropped): detections without a box (a whole-frame label) are kept."""
        kept: list[Detection] = []
        dropped: list[Detection] = []
        for det in detections:
            (kept if det.box is None or self.keeps(det.box) else dropped).append(det)
        return tuple(kept), tuple(dropped)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The crop a whole-frame model (classifier, anomaly) sees: the inspected area's bounding box, its
        pixels outside the inspected area filled with the mean colour of those inside (a flat patch the
        model reads as plain surface, where black would read as a hole)."""
        return self._filled(image, self.crop_box)

    def blank(self, image: np.ndarray) -> np.ndarray:
        """The whole frame with its pixels outside the inspected area filled as :meth:`crop` fills them (what
        the VLM is asked about: the same frame size, the ignored parts gone)."""
        return self._filled(image, (0, 0, self.zones.width, self.zones.height))

    def _filled(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        if image.ndim != 3 or image.shape[:2] != (self.zones.height, self.zones.width):
            raise ValueError(f"expected a BGR frame of shape ({self.zones.height}, {self.zones.width}, 3) for these "
                             f"zones, got {image.shape}")
        x1, y1, x2, y2 = box
        out = image[y1:y2, x1:x2].copy()
        hidden = self.mask[y1:y2, x1:x2] == 0
        if hidden.any():
            mean = cv2.mean(image, mask=self.mask)[:image.shape[2]]  # over the inspected pixels
            out[hidden] = np.round(np.asarray(mean)).astype(out.dtype)
        return out


class CameraZones:
    """One camera's zones: a :class:`ZoneMask` per frame size, or the reason they cannot apply to it."""

    def __init__(self, camera_id: str, config: ZonesConfig) -> None:
        self.camera_id = camera_id
        self.config = config
        self._masks: dict[tuple[int, int], ZoneMask | str] = {}

    def for_frame(self, width: int, height: int) -> ZoneMask | str:
        """The mask for frames of this size, or the problem (a string, logged once per size)."""
        key = (width, height)
        found = self._masks.get(key)
        if found is None:
            found = self._build(width, height)
            if isinstance(found, str):
                log.error("camera %s: zones not applied, its %dx%d frames are inspected whole: %s",
                          self.camera_id, width, height, found)
            self._masks[key] = found
        return found

    def _build(self, width: int, height: int) -> ZoneMask | str:
        zones = self.config.resolve(width, height)
        for kind, polygons in (("include", zones.include), ("exclude", zones.exclude)):
            for polygon in polygons:
                outside = [p for p in polygon.points if not (0 <= p[0] <= width and 0 <= p[1] <= height)]
                if outside:
                    x, y = outside[0]
                    return (f"{kind} zone {polygon.name!r}: point [{x:g}, {y:g}] is outside the {width}x{height} "
                            f"frame (pixels 0..{width} across, 0..{height} down); fix cameras[].zones")
        if not self.config.allow_overlap:
            for inc in zones.include:
                for exc in zones.exclude:
                    if polygons_overlap(inc.points, exc.points):
                        return (f"exclude zone {exc.name!r} overlaps include zone {inc.name!r}; shrink one, or set "
                                "allow_overlap: true (the exclude wins)")
        mask = ZoneMask(zones)
        if mask.area == 0:
            return "these zones leave no pixel of the frame to inspect"
        return mask

    def report(self, mask: ZoneMask | str, dropped: int = 0, *, crop: bool = False) -> ZoneReport:
        """What the event of a frame inspected with ``mask`` says about the zones."""
        include = tuple(z.name for z in self.config.include)
        exclude = tuple(z.name for z in self.config.exclude)
        if isinstance(mask, str):
            return ZoneReport(include, exclude, self.config.rule, error=mask)
        return ZoneReport(include, exclude, self.config.rule, dropped=dropped,
                          crop=mask.crop_box if crop else None)
