"""What the agent sends the gateway for one uncertain frame. Pure (CPU-bound) logic, no I/O.

:func:`build_request` makes a ``DescribeRequest``:

* ``image``: the whole frame as a JPEG, downscaled (area averaging) so that its
  longer side is at most ``max_side`` pixels (672 by default: LLaVA 1.5 sees
  336x336, so more pixels only cost bandwidth and gateway CPU); never upscaled.
* ``crops``: close-ups of the uncertain detections that have a box, most
  confident first, at most ``max_crops``. Each is the box grown by ``margin``
  times its width/height on every side (and to at least :data:`MIN_CROP_SIDE`
  pixels, so a tiny box still shows its surroundings), clipped to the frame,
  downscaled to ``max_side`` when larger, JPEG-encoded. ``Crop.box`` says where it
  was cut, in source-frame pixels.
* ``detections``: the decision's tags (label, confidence, box in source-frame
  pixels; no box for a classifier's tags), most confident first.
* ``source_width``/``source_height``: the original frame's size, which the boxes
  refer to; ids (device, camera, sequence, event id), template id, prefilter model.

It runs on the escalation thread's encoder, never on the inference thread.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from agent.core.decision import TriageDecision
from agent.core.event import TagEvent
from agent.wire import escalation_pb2 as pb

__all__ = ["MIN_CROP_SIDE", "build_request", "crop_region", "downscale", "encode_jpeg"]

MIN_CROP_SIDE = 64
"""Smallest side of a crop region in source pixels (before clipping to the frame)."""


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` shrunk (keeping its aspect) so that its longer side is at most ``max_side``; unchanged if
    already small enough."""
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {image.shape}")
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} {image.dtype} image as JPEG")
    return bytes(data.tobytes())


def crop_region(box: tuple[float, float, float, float], margin: float, width: int,
                height: int) -> tuple[int, int, int, int] | None:
    """The integer region (x1, y1, x2, y2) to cut around ``box``, clipped to the frame; None when
    the box is not finite or lies outside the frame."""
    if not all(math.isfinite(v) for v in box):
        return None
    x1, y1, x2, y2 = box
    bw, bh = max(0.0, x2 - x1), max(0.0, y2 - y1)
    grow_x = max(margin * bw, (MIN_CROP_SIDE - bw) / 2.0)
    grow_y = max(margin * bh, (MIN_CROP_SIDE - bh) / 2.0)
    left, top = max(0, math.floor(x1 - grow_x)), max(0, math.floor(y1 - grow_y))
    right, bottom = min(width, math.ceil(x2 + grow_x)), min(height, math.ceil(y2 + grow_y))
    if right - left < 2 or bottom - top < 2:
        return None
    return left, top, right, bottom


def build_request(
    image: np.ndarray,
    event: TagEvent,
    decision: TriageDecision,
    *,
    template_id: str,
    max_side: int = 672,
    jpeg_quality: int = 85,
    crop_margin: float = 0.5,
    max_crops: int = 4,
) -> pb.DescribeRequest:
    """The Describe request for one inspected frame (see the module doc)."""
    height, width = image.shape[:2]
    crops: list[pb.Crop] = []
    for tag in decision.tags:
        if len(crops) >= max_crops:
            break
        det = tag.detection
        if tag.state != "uncertain" or det.box is None:
            continue
        region = crop_region(det.box, crop_margin, width, height)
        if region is None:
            continue
        x1, y1, x2, y2 = region
        crops.append(pb.Crop(
            image=encode_jpeg(downscale(image[y1:y2, x1:x2], max_side), jpeg_quality),
            box=pb.Box(x1=x1, y1=y1, x2=x2, y2=y2), label=det.label, confidence=det.confidence))
    detections = [pb.Detection(label=t.detection.label, confidence=t.detection.confidence,
                               box=_box(t.detection.box)) for t in decision.tags]
    return pb.DescribeRequest(
        device_id=event.device, camera_id=event.camera, frame_sequence=event.sequence, event_id=event.event_id,
        image=encode_jpeg(downscale(image, max_side), jpeg_quality), source_width=width, source_height=height,
        detections=detections, crops=crops, template_id=template_id, prefilter_model=event.model_id)


def _box(box: tuple[float, float, float, float] | None) -> pb.Box | None:
    return None if box is None else pb.Box(x1=box[0], y1=box[1], x2=box[2], y2=box[3])
