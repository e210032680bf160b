"""Images for the gateway tests: good ones, and the bad inputs the gateway must refuse."""

from __future__ import annotations

import functools
import struct
import zlib

import cv2
import numpy as np

from agent.escalation.wire import escalation_pb2 as pb


@functools.cache
def frame(width: int = 672, height: int = 448) -> np.ndarray:
    """A smooth noisy BGR frame (JPEG-encodes to a realistic size)."""
    noise = np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (9, 9), 3)


@functools.cache
def jpeg(width: int = 672, height: int = 448, quality: int = 85) -> bytes:
    ok, data = cv2.imencode(".jpg", frame(width, height), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


@functools.cache
def png(width: int = 96, height: int = 64) -> bytes:
    ok, data = cv2.imencode(".png", frame(width, height))
    assert ok
    return data.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.cache
def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A real decompression bomb: a 1-bit PNG of width*height black pixels in ~50 kB
    (400 MB once OpenCV decodes it to 8 bits per pixel)."""
    packer = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def request(image: bytes | None = None, **fields: object) -> pb.DescribeRequest:
    """A Describe request as the agent sends it: one uncertain detection, an event id."""
    base: dict[str, object] = {
        "device_id": "box7", "camera_id": "conveyor1", "frame_sequence": 42, "event_id": "ev-0001",
        "image": jpeg() if image is None else image, "source_width": 672, "source_height": 448,
        "detections": [pb.Detection(label="scratch", confidence=0.42, box=pb.Box(x1=100, y1=80, x2=180, y2=120))],
        "template_id": "inspect-v1", "prefilter_model": "conveyor-yolov8n-int8@0123abcd",
    }
    base.update(fields)
    return pb.DescribeRequest(**base)  # type: ignore[arg-type]
