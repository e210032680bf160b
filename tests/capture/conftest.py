"""Fixtures for the capture tests: damaged video files, a closed port, state recording."""

from __future__ import annotations

import pathlib
import socket
import threading
import time

import pytest

# the video and RTSP fixtures live in tests/conftest.py (the service tests use them too)
from tests.conftest import VIDEO_FRAMES, VIDEO_SIZE, RtspServer  # noqa: F401

DAMAGED_FRAMES = (10, 11, 25)  # 0-based indexes of the frames garbled by damaged_video


def _avi_frame_chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every video frame's data in an AVI's 'movi' list."""
    pos = data.index(b"movi") + 4
    chunks = []
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk_id == b"idx1":
            break
        if chunk_id.endswith(b"dc"):
            chunks.append((pos + 8, size))
        pos += 8 + size + (size & 1)
    return chunks


@pytest.fixture
def damaged_video(tmp_path: pathlib.Path, video_file: pathlib.Path) -> pathlib.Path:
    """:func:`video_file` with the first half of the JPEG data of the frames in
    :data:`DAMAGED_FRAMES` wiped (0xFF fill): their headers and Huffman tables are
    gone, so they cannot be decoded, while the container stays intact.

    (Random garbage in a JPEG body is not enough: FFmpeg's MJPEG decoder conceals
    most such damage and returns a smeared frame without an error.)"""
    path = tmp_path / "damaged.avi"
    data = bytearray(video_file.read_bytes())
    chunks = _avi_frame_chunks(bytes(data))
    assert len(chunks) == VIDEO_FRAMES
    for index in DAMAGED_FRAMES:
        offset, size = chunks[index]
        data[offset:offset + size // 2] = b"\xff" * (size // 2)
    path.write_bytes(bytes(data))
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A localhost port nothing listens on."""
    return _free_port()


class StateRecorder:
    """An ``on_state`` callback that remembers (time, state, reason) and can wait."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str | None]] = []
        self._cond = threading.Condition()

    def __call__(self, camera_id: str, state: str, reason: str | None) -> None:
        with self._cond:
            self.events.append((time.monotonic(), state, reason))
            self._cond.notify_all()

    @property
    def states(self) -> list[str]:
        with self._cond:
            return [state for _t, state, _r in self.events]

    def wait_for(self, state: str, timeout: float, occurrence: int = 1) -> float:
        """Wait until ``state`` was reported ``occurrence`` times; return when it was."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [t for t, s, _r in self.events if s == state]
                if len(hits) >= occurrence:
                    return hits[occurrence - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"state {state!r} (#{occurrence}) not reported within {timeout} s; "
                                         f"got {[s for _t, s, _r in self.events]}")
                self._cond.wait(remaining)


@pytest.fixture
def states() -> StateRecorder:
    return StateRecorder()
