"""Snapshots: the inspected frame as a JPEG with the tags drawn on it.

``render_snapshot`` is pure (image in, bytes out): boxes coloured by state
(red = accepted, amber = uncertain), labels with confidence (a classifier's
frame-level tags, which have no box, as labels at the top left), scaled down to
``max_width`` and re-encoded at lower quality until it fits ``max_bytes``. A camera's inspection zones are
drawn under the tags: include polygons outlined in green, exclude polygons shaded grey with a magenta outline,
each with its name.
``shrink_jpeg`` makes an encoded snapshot smaller (for a broker whose packet limit
it exceeds). ``SnapshotSender`` decides which inspections get one and hands the bytes to the
publisher, counting what it skipped.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Protocol

import cv2
import numpy as np

from agent.config.models import SnapshotConfig
from agent.core.decision import TriageDecision
from agent.core.zones import FrameZones, Polygon

log = logging.getLogger(__name__)

_COLOURS = {"accepted": (40, 40, 230), "uncertain": (0, 190, 255)}  # BGR
_QUALITY_STEPS = (0, 15, 30, 45)  # subtracted from the configured quality until the JPEG fits


_INCLUDE_COLOUR = (60, 200, 60)  # BGR green
_EXCLUDE_COLOUR = (200, 60, 200)  # BGR magenta


def draw_zones(canvas: np.ndarray, zones: FrameZones, scale: float) -> None:
    """Outline the include polygons and shade the exclude ones on ``canvas`` (a frame scaled by ``scale``)."""
    def points(polygon: Polygon) -> np.ndarray:
        return np.round(np.asarray(polygon.points, dtype=np.float64) * scale).astype(np.int32)
    if zones.exclude:
        shade = canvas.copy()
        cv2.fillPoly(shade, [points(p) for p in zones.exclude], (128, 128, 128))
        cv2.addWeighted(shade, 0.45, canvas, 0.55, 0, dst=canvas)
    for polygon, colour in [(p, _INCLUDE_COLOUR) for p in zones.include] + [(p, _EXCLUDE_COLOUR)
                                                                             for p in zones.exclude]:
        pts = points(polygon)
        cv2.polylines(canvas, [pts], True, colour, 1, cv2.LINE_AA)
        x, y = int(pts[:, 0].min()), int(pts[:, 1].min())
        cv2.putText(canvas, polygon.name, (x + 3, max(y + 12, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1,
                    cv2.LINE_AA)


def render_snapshot(image: np.ndarray, decision: TriageDecision, *, max_width: int, quality: int,
                    max_bytes: int, zones: FrameZones | None = None) -> bytes | None:
    """Annotated JPEG of ``image`` (BGR), at most ``max_width`` wide and ``max_bytes`` long;
    None if even the lowest quality step is too large."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a BGR image of shape (H, W, 3), got {image.shape}")
    scale = min(1.0, max_width / image.shape[1])
    canvas = image.copy() if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale,
                                                          interpolation=cv2.INTER_AREA)
    thickness = max(1, round(2 * scale))
    if zones is not None:
        draw_zones(canvas, zones, scale)
    banner_y = 0  # frame-level tags (a classifier's, no box) are stacked at the top left
    for tag in decision.tags:
        d = tag.detection
        colour = _COLOURS[tag.state]
        text = f"{d.label} {d.confidence:.2f}{'?' if tag.state == 'uncertain' else ''}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        if d.box is None:
            x1 = 0
            banner_y += th + base + 4
            ty = banner_y
        else:
            x1, y1, x2, y2 = (int(round(v * scale)) for v in d.box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
            ty = max(th + base, y1)
        cv2.rectangle(canvas, (x1, ty - th - base), (x1 + tw + 2, ty), colour, -1)
        cv2.putText(canvas, text, (x1 + 1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for step in _QUALITY_STEPS:
        q = max(10, quality - step)
        ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok and buf.size <= max_bytes:
            return buf.tobytes()
    return None


_SHRINK_SCALES = (1.0, 0.75, 0.5, 0.35, 0.25, 0.18, 0.125)
_SHRINK_QUALITIES = (70, 50, 30)


def shrink_jpeg(jpeg: bytes, max_bytes: int) -> bytes | None:
    """``jpeg`` re-encoded (lower quality, then smaller) to at most ``max_bytes``; None when it cannot be
    decoded or even the smallest step (1/8 of the size, quality 30) is too large."""
    if len(jpeg) <= max_bytes:
        return jpeg
    if max_bytes < 128:
        return None  # no JPEG with a header is that small
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    for scale in _SHRINK_SCALES:
        canvas = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if canvas.shape[0] < 8 or canvas.shape[1] < 8:
            return None
        for q in _SHRINK_QUALITIES:
            ok, buf = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok and buf.size <= max_bytes:
                return bytes(buf.tobytes())
    return None


class SnapshotSink(Protocol):
    def publish_snapshot(self, camera: str, event_id: str, jpeg: bytes, durable: bool) -> bool: ...


@dataclasses.dataclass
class SnapshotCounters:
    sent: int = 0
    too_large: int = 0
    not_queued: int = 0


class SnapshotSender:
    """Per inspection: render and publish a snapshot if its verdict is one the config asks for."""

    def __init__(self, config: SnapshotConfig, sink: SnapshotSink) -> None:
        self.config = config
        self._sink = sink
        self.counters = SnapshotCounters()

    def wants(self, verdict: str) -> bool:
        return self.config.enabled and verdict in self.config.verdicts

    def send(self, camera: str, event_id: str, image: np.ndarray, decision: TriageDecision,
             zones: FrameZones | None = None) -> None:
        if not self.wants(decision.verdict):
            return
        jpeg = self.render(event_id, image, decision, zones)
        if jpeg is not None:
            self.deliver(camera, event_id, jpeg)

    def render(self, event_id: str, image: np.ndarray, decision: TriageDecision,
               zones: FrameZones | None = None) -> bytes | None:
        """The snapshot's JPEG (``zones`` drawn under the tags); None (counted, logged) when it cannot fit
        ``max_bytes``."""
        c = self.config
        jpeg = render_snapshot(image, decision, max_width=c.max_width, quality=c.quality, max_bytes=c.max_bytes,
                               zones=zones)
        if jpeg is None:
            self.counters.too_large += 1
            log.warning("snapshot of event %s skipped: larger than snapshots.max_bytes=%d even at low quality "
                        "(%d skipped so far)", event_id, c.max_bytes, self.counters.too_large)
        return jpeg

    def deliver(self, camera: str, event_id: str, jpeg: bytes) -> None:
        """Hand a rendered snapshot to the publisher."""
        if self._sink.publish_snapshot(camera, event_id, jpeg, self.config.store_in_outbox):
            self.counters.sent += 1
        else:
            self.counters.not_queued += 1
