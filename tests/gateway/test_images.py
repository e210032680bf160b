"""check_image: pure, bytes in, facts or a refusal out."""

from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from agent.errors import RequestRejected
from agent.gateway.images import check_image, image_kind, inspect_image
from tests.escalation import samples

LIMITS = {"max_bytes": 8 * 1024 * 1024, "max_pixels": 4096 * 4096}


def test_good_jpeg_and_png_give_their_kind_and_size() -> None:
    jpeg = check_image(samples.jpeg(), **LIMITS)
    assert (jpeg.kind, jpeg.width, jpeg.height, jpeg.nbytes) == ("jpeg", 672, 448, len(samples.jpeg()))
    png = check_image(samples.png(), **LIMITS)
    assert (png.kind, png.width, png.height) == ("png", 96, 64)


@pytest.mark.parametrize(("width", "height"), [(1, 1), (7, 9), (33, 17), (672, 448)])
def test_odd_sizes_decode_consistently(width: int, height: int) -> None:
    # the JPEG is decoded at 1/8 scale: ceil(672/8) x ceil(448/8) = 84 x 56; 7x9 -> 1x2
    assert check_image(samples.jpeg(width, height), **LIMITS).width == width
    assert check_image(samples.png(width, height), **LIMITS).height == height


def test_progressive_and_greyscale_jpegs_are_accepted() -> None:
    grey = cv2.cvtColor(samples.frame(), cv2.COLOR_BGR2GRAY)
    ok, data = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    assert check_image(data.tobytes(), **LIMITS).kind == "jpeg"


def test_trailing_bytes_after_the_eoi_marker_are_accepted() -> None:
    assert check_image(samples.jpeg() + b"\x00" * 64, **LIMITS).width == 672  # some cameras pad


REFUSALS = [
    # (id, data, limits override, words in the message)
    ("empty", b"", {}, ["image is empty (0 bytes)"]),
    ("one byte too many", b"\xff\xd8\xff" + bytes(2045), {"max_bytes": 2047}, ["2,048 bytes", "at most 2,047"]),
    ("GIF", b"GIF89a" + bytes(40), {}, ["looks like GIF", "47 49 46 38"]),
    ("WebP", b"RIFF\x00\x00\x00\x00WEBPVP8 ", {}, ["looks like WebP"]),
    ("text", b"not an image at all", {}, ["looks like unknown data", "expected a JPEG"]),
    ("JPEG cut in the scan", samples.jpeg()[:-2000], {}, ["truncated JPEG", "EOI marker FF D9"]),
    ("JPEG cut in the header", samples.jpeg()[:100], {}, ["truncated JPEG", "inside its header"]),
    ("JPEG of magic bytes only", b"\xff\xd8\xff", {}, ["truncated JPEG"]),
    ("JPEG too many pixels", samples.jpeg(), {"max_pixels": 672 * 448 - 1}, ["672x448 = 301,056 pixels",
                                                                              "at most 301,055"]),
    ("PNG bomb", samples.png_bomb(), {}, ["20000x20000", "from its PNG header", "max_image_pixels"]),
    ("PNG without IEND", samples.png()[:-12], {}, ["truncated PNG", "no IEND chunk"]),
    ("PNG without IHDR", samples.png()[:20], {}, ["no IHDR chunk"]),
    # the scan data cut in half and an EOI put back: OpenCV decoded it with a warning on stderr only
    ("JPEG cut, EOI appended", samples.jpeg()[:len(samples.jpeg()) // 2] + b"\xff\xd9", {},
     ["corrupt or incomplete", "premature end of data segment"]),
    ("progressive JPEG cut, EOI appended", samples.progressive()[:len(samples.progressive()) // 2] + b"\xff\xd9",
     {}, ["corrupt or incomplete"]),
    # 883 scans of ~33 bytes: about 6 s of CPU at 4096x4096, refused from the markers alone
    ("scan bomb", samples.progressive_jpeg(4096, 4096), {}, ["JPEG of 883 scans", "at most 32",
                                                            "limits.max_jpeg_scans"]),
]


@pytest.mark.parametrize(("data", "limits", "words"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_say_what_is_wrong(data: bytes, limits: dict[str, int], words: list[str]) -> None:
    with pytest.raises(RequestRejected) as info:
        check_image(data, what="image", **{**LIMITS, **limits})
    message = str(info.value)
    assert message.startswith("image")
    for word in words:
        assert word in message


def test_a_png_with_a_corrupt_body_is_refused_after_decoding() -> None:
    data = bytearray(samples.png(64, 64))
    idat = data.index(b"IDAT") + 4
    data[idat + 10: idat + 200] = bytes(190)  # zeros over the compressed pixels
    with pytest.raises(RequestRejected, match="cannot be decoded"):
        check_image(bytes(data), **LIMITS)


def test_a_zero_size_png_header_is_refused() -> None:
    header = struct.pack(">IIBBBBB", 0, 10, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + header + struct.pack(">I", zlib.crc32(b"IHDR" + header))
    with pytest.raises(RequestRejected, match="size of 0x10"):
        check_image(b"\x89PNG\r\n\x1a\n" + chunk + bytes(20), **LIMITS)


def test_the_name_of_the_image_is_in_the_message() -> None:
    with pytest.raises(RequestRejected, match=r"^crops\[3\].image is empty"):
        check_image(b"", what="crops[3].image", **LIMITS)


@pytest.mark.parametrize(("head", "kind"), [
    (b"\xff\xd8\xff\xe0", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
    (b"\x00\x00\x00\x1cftypavif", "AVIF/HEIF"), (b"%PDF-1.7", "PDF"),
])
def test_image_kind(head: bytes, kind: str) -> None:
    assert image_kind(head) == kind


def test_decoding_ignores_exif_orientation() -> None:
    # a JPEG that says "rotate 90 degrees" must still match its header's width x height
    data = samples.jpeg(64, 32)
    exif = (b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"
            b"\x00\x00\x00\x00")
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    rotated = data[:2] + app1 + data[2:]
    assert np.array_equal(cv2.imdecode(np.frombuffer(rotated, np.uint8), cv2.IMREAD_COLOR).shape[:2], (64, 32))
    info = check_image(rotated, **LIMITS)
    assert (info.width, info.height) == (64, 32)


def test_a_progressive_jpeg_within_the_scan_limit_is_decoded() -> None:
    data = samples.progressive_jpeg(640, 480, 3, 2)  # 1 + 3 * 3 = 10 scans, like an encoder's default
    info = check_image(data, **LIMITS)
    assert (info.scans, info.width, info.height) == (10, 640, 480)


def test_the_scan_bomb_is_refused_without_decoding() -> None:
    started = time.process_time()
    with pytest.raises(RequestRejected, match="883 scans"):
        inspect_image(samples.progressive_jpeg(4096, 4096), max_bytes=8 * 1024 * 1024, max_pixels=4096 * 4096)
    assert time.process_time() - started < 0.5  # a decode costs about 6 s; this is a hang check, not a speed
