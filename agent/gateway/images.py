"""Checks on the images a Describe request carries. Pure: bytes in, facts or a refusal out.

:func:`inspect_image` reads only the header: it accepts JPEG and PNG only (by
their magic bytes, not by a name), refuses what is empty or too large (bytes, and
width*height read from the header, so a PNG bomb never reaches the decoder), a
JPEG with more than ``max_scans`` scans (each scan of a progressive JPEG is a
full pass over the image: a 230 kB file of tiny refinement scans costs seconds),
and a file without its end (EOI marker FF D9, PNG IEND chunk). It is cheap
enough for the event loop (a marker walk of the header and one ``bytes.count``).

:func:`decode_image` then decodes the file to prove the data is sound: a JPEG with
libjpeg-turbo through ``simplejpeg`` in strict mode, so that a corrupt or
truncated stream (also one with an EOI appended after the cut) is refused where
OpenCV would only print a warning; a PNG with OpenCV. Both release the GIL; the
gateway runs them in a small worker pool. :func:`check_image` does both.

Every refusal is a :class:`~agent.errors.RequestRejected` whose message names
the image (``image``, ``crops[2].image``), what is wrong and what is expected.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Literal

import cv2
import numpy as np
import simplejpeg

from agent.errors import RequestRejected

__all__ = ["DEFAULT_MAX_SCANS", "ImageInfo", "check_image", "decode_image", "image_kind", "inspect_image"]

DEFAULT_MAX_SCANS = 32

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# start-of-frame markers that carry the image size (not DHT C4, JPG C8, DAC CC)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: no length field

# what other files look like, for a useful refusal
_OTHER_MAGIC = (
    (b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"\x00\x00\x00\x0cjP", "JPEG 2000"),
    (b"%PDF", "PDF"), (b"{", "JSON or text"), (b"<", "XML/HTML or text"),
)


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    kind: Literal["jpeg", "png"]
    width: int
    height: int
    nbytes: int
    scans: int = 1


def image_kind(data: bytes) -> str:
    """What the bytes look like: ``jpeg``, ``png``, or a description of something else."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:12] in (b"ftypavif", b"ftypheic", b"ftypmif1"):
        return "AVIF/HEIF"
    for magic, name in _OTHER_MAGIC:
        if data.startswith(magic):
            return name
    return "unknown data"


def check_image(data: bytes, *, what: str = "image", max_bytes: int, max_pixels: int,
                max_scans: int = DEFAULT_MAX_SCANS) -> ImageInfo:
    """Check one encoded image, header and data; return its kind and size, or raise RequestRejected."""
    info = inspect_image(data, what=what, max_bytes=max_bytes, max_pixels=max_pixels, max_scans=max_scans)
    decode_image(data, info, what)
    return info


def inspect_image(data: bytes, *, what: str = "image", max_bytes: int, max_pixels: int,
                  max_scans: int = DEFAULT_MAX_SCANS) -> ImageInfo:
    """Check one encoded image's header only (no decoding); its kind and size, or RequestRejected."""
    if not data:
        raise RequestRejected(f"{what} is empty (0 bytes); expected the bytes of a JPEG or PNG file")
    if len(data) > max_bytes:
        raise RequestRejected(
            f"{what} is {len(data):,} bytes; the gateway accepts at most {max_bytes:,} bytes "
            "(limits.max_image_bytes); send a JPEG downscaled to the VLM's size (long side 672 px is plenty)")
    kind = image_kind(data)
    if kind == "jpeg":
        width, height, scan = _jpeg_header(data, what)
    elif kind == "png":
        width, height = _png_header(data, what)
    else:
        head = data[:8].hex(" ")
        raise RequestRejected(f"{what} is not JPEG or PNG (it looks like {kind}; first bytes {head}); "
                              "expected a JPEG (FF D8 FF ...) or PNG (89 50 4E 47 ...) file")
    if width * height > max_pixels:
        raise RequestRejected(
            f"{what} is {width}x{height} = {width * height:,} pixels (from its {kind.upper()} header); the gateway "
            f"accepts at most {max_pixels:,} pixels (limits.max_image_pixels); downscale it before sending")
    scans = 1
    if kind == "jpeg":
        if data.rfind(b"\xff\xd9") < scan:
            raise RequestRejected(f"{what} is a truncated JPEG: its image data has no end (EOI marker FF D9) in "
                                  f"{len(data):,} bytes; expected a complete JPEG file")
        scans = data.count(b"\xff\xda")  # SOS markers; FF inside entropy-coded data is stuffed (FF 00)
        if scans > max_scans:
            raise RequestRejected(f"{what} is a JPEG of {scans} scans; the gateway decodes at most {max_scans} "
                                  "(limits.max_jpeg_scans): send a baseline JPEG, or a progressive one with the "
                                  "encoder's default scans (about 10)")
    elif data.rfind(_PNG_IEND) < 0:
        raise RequestRejected(f"{what} is a truncated PNG: no IEND chunk in {len(data):,} bytes; "
                              "expected a complete PNG file")
    return ImageInfo(kind=kind, width=width, height=height, nbytes=len(data), scans=scans)  # type: ignore[arg-type]


def _jpeg_header(data: bytes, what: str) -> tuple[int, int, int]:
    """(width, height, offset of the first scan's data) from the JPEG's markers."""
    size: tuple[int, int] | None = None
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise RequestRejected(f"{what} is a corrupt JPEG: expected a marker (FF) at byte {i}, found "
                                  f"{data[i]:02X}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9):
            raise RequestRejected(f"{what} is a corrupt JPEG: marker FF {marker:02X} before any image data")
        if i + 2 > n:
            break
        (length,) = struct.unpack_from(">H", data, i)
        if length < 2:
            raise RequestRejected(f"{what} is a corrupt JPEG: segment FF {marker:02X} at byte {i - 2} has "
                                  f"length {length}")
        if marker in _SOF:
            if i + 7 > n:
                break
            height, width = struct.unpack_from(">HH", data, i + 3)
            if width == 0 or height == 0:
                raise RequestRejected(f"{what}: the JPEG header gives a size of {width}x{height}; expected both "
                                      "above 0")
            size = (width, height)
        elif marker == 0xDA:  # start of scan
            if size is None:
                raise RequestRejected(f"{what} is a corrupt JPEG: image data starts before the frame header "
                                      "(no SOF marker)")
            return size[0], size[1], i + length
        i += length
    raise RequestRejected(f"{what} is a truncated JPEG: it ends after {n:,} bytes, inside its header "
                          "(before the image data); expected a complete JPEG file")


def _png_header(data: bytes, what: str) -> tuple[int, int]:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise RequestRejected(f"{what} is a truncated or corrupt PNG: no IHDR chunk after the signature; "
                              "expected a complete PNG file")
    width, height = struct.unpack_from(">II", data, 16)
    if width == 0 or height == 0:
        raise RequestRejected(f"{what}: the PNG header gives a size of {width}x{height}; expected both above 0")
    return width, height


def decode_image(data: bytes, info: ImageInfo, what: str = "image") -> None:
    """Decode the whole file (after :func:`inspect_image`); RequestRejected when the data is not sound.
    A JPEG is decoded at 1/8 scale (all of its data is still read and entropy-decoded, at a fraction of
    the cost), strictly: a libjpeg warning (corrupt or missing data) is a refusal. A PNG as stored."""
    if info.kind == "jpeg":
        try:
            image = simplejpeg.decode_jpeg(data, colorspace="GRAY", fastdct=True, fastupsample=True,
                                           min_height=1, min_width=1, strict=True)
        except ValueError as exc:
            raise RequestRejected(f"{what}: the JPEG data of {len(data):,} bytes is corrupt or incomplete "
                                  f"(libjpeg: {exc}); expected a complete, valid JPEG file") from exc
        expected = ((info.height + 7) // 8, (info.width + 7) // 8)
    else:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        expected = (info.height, info.width)
    kind = info.kind.upper()
    if image is None or image.size == 0:
        raise RequestRejected(f"{what}: the {kind} data of {len(data):,} bytes cannot be decoded "
                              f"(header says {info.width}x{info.height}); expected a valid {kind} file")
    if tuple(image.shape[:2]) != expected:
        raise RequestRejected(f"{what}: the {kind} decodes to {image.shape[1]}x{image.shape[0]} but its "
                              f"header says {info.width}x{info.height}; expected a consistent file")
