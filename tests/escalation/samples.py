"""Images for the gateway tests: good ones, and the bad inputs the gateway must refuse."""

from __future__ import annotations

import functools
import struct
import zlib

import cv2
import numpy as np

from agent.wire import escalation_pb2 as pb


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
def progressive(width: int = 672, height: int = 448) -> bytes:
    """A progressive JPEG as OpenCV (libjpeg) writes one: 10 scans."""
    ok, data = cv2.imencode(".jpg", frame(width, height), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
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


class _Bits:
    """MSB-first bit writer for JPEG entropy-coded data (pads with 1s, stuffs 0x00 after 0xFF)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value: int, length: int) -> None:
        self.acc = (self.acc << length) | (value & ((1 << length) - 1))
        self.n += length
        while self.n >= 8:
            self.n -= 8
            byte = (self.acc >> self.n) & 0xFF
            self.out += b"\xff\x00" if byte == 0xFF else bytes([byte])
        self.acc &= (1 << self.n) - 1

    def flush(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)
        return bytes(self.out)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


# AC table: EOB14 (0xE0) is code "0"; EOB0..EOB13 are the 5-bit codes 10000..11101 (canonical Huffman)
_EOB_CODES = {0xE0: (0b0, 1)} | {r << 4: (0b10000 + r, 5) for r in range(14)}


def _eob_runs(bits: _Bits, blocks: int) -> None:
    """Every block of a scan is empty: EOBRUN symbols covering ``blocks`` blocks (at most 32767 each)."""
    while blocks:
        r = min(14, blocks.bit_length() - 1)
        run = min(blocks, (1 << (r + 1)) - 1)
        code, length = _EOB_CODES[r << 4]
        bits.put(code, length)
        bits.put(run - (1 << r), r)
        blocks -= run


@functools.cache
def progressive_jpeg(width: int, height: int, coefficients: int = 63, refinements: int = 13) -> bytes:
    """A valid, flat grey progressive JPEG of 1 + ``coefficients`` * (1 + ``refinements``) scans, each a
    few dozen bytes: the scan-count bomb (every scan is a pass over all of the image's blocks)."""
    blocks = -(-width // 8) * -(-height // 8)
    dc_table = bytes([0x00, 1] + [0] * 15) + b"\x00"
    ac_lengths = [1, 0, 0, 0, 14] + [0] * 11
    ac_table = bytes([0x10] + ac_lengths) + bytes([0xE0] + [r << 4 for r in range(14)])
    parts = [b"\xff\xd8", _segment(0xDB, bytes([0]) + bytes([1] * 64)),
             _segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + bytes([1, 0x11, 0])),
             _segment(0xC4, dc_table + ac_table)]
    dc = _Bits()
    for _ in range(blocks):
        dc.put(0, 1)  # DC difference of category 0
    parts += [_segment(0xDA, bytes([1, 1, 0x00, 0, 0, 0x00])), dc.flush()]
    for k in range(1, coefficients + 1):
        for ah, al in [(0, refinements)] + [(a, a - 1) for a in range(refinements, 0, -1)]:
            scan = _Bits()
            _eob_runs(scan, blocks)
            parts += [_segment(0xDA, bytes([1, 1, 0x00, k, k, (ah << 4) | al])), scan.flush()]
    return b"".join(parts) + b"\xff\xd9"
