"""Fixtures for the capture tests: real video files, a real RTSP server, state recording."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import VIDEO_FRAMES, VIDEO_SIZE  # noqa: F401  (the video fixtures live there)

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER = pathlib.Path(__file__).with_name("rtsp_server.py")
RTSP_PACKAGES = ("gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base "
                 "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly")




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


class RtspServer:
    """tests/capture/rtsp_server.py in a subprocess of the system Python."""

    def __init__(self, port: int, log: pathlib.Path, width: int = 320, height: int = 240) -> None:
        self.port = port
        self.width, self.height = width, height
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(RTSP_SERVER), "--port", str(self.port),
                 "--width", str(self.width), "--height", str(self.height)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                output = self._log.read_text(errors="replace")
                if self._proc.returncode == 3:
                    pytest.skip(f"RTSP server cannot run ({output.strip()}); install: apt-get install -y "
                                f"{RTSP_PACKAGES}")
                raise RuntimeError(f"RTSP server exited with {self._proc.returncode}: {output}")
            if self._answers_options():
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"RTSP server did not answer on port {self.port} within {timeout} s")

    def _answers_options(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as conn:
                conn.sendall(f"OPTIONS {self.url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
                return conn.recv(64).startswith(b"RTSP/1.0 200")
        except OSError:
            return False

    def kill(self) -> None:
        """Kill the server abruptly, like a camera losing power."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _rtsp_available() -> str | None:
    """None when the system Python can run the RTSP server, else why not."""
    if not pathlib.Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    check = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "missing = [e for e in ('videotestsrc', 'x264enc', 'rtph264pay') "
             "if not Gst.ElementFactory.find(e)]; "
             "raise SystemExit(' '.join(missing) or None)")
    result = subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or [""])[-1] or result.stdout.strip()
        return f"system Python cannot run GStreamer's RTSP server ({detail or 'missing elements'})"
    return None


@pytest.fixture(scope="session")
def rtsp_support() -> None:
    reason = _rtsp_available()
    if reason is not None:
        pytest.skip(f"{reason}; install: apt-get install -y {RTSP_PACKAGES}")


@pytest.fixture
def rtsp_server(rtsp_support: None, tmp_path: pathlib.Path) -> Iterator[RtspServer]:
    """A running RTSP camera at ``rtsp_server.url`` (320x240, 15 fps H.264)."""
    server = RtspServer(_free_port(), tmp_path / "rtsp-server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()
