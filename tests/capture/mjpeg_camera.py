"""A live MJPEG camera over HTTP, served as many IP cameras serve one (``multipart/x-mixed-replace``: one JPEG
per part, FFmpeg's ``mpjpeg`` demuxer reads it), made of a video file's MJPEG packets as they are: for the tests
and benchmarks of live MJPEG decoding (scripts/bench_mjpeg_skip.py).

    python tests/capture/mjpeg_camera.py VIDEO.avi [--port 0] [--fps 30] [--once]

Prints ``READY http://127.0.0.1:PORT/video.mjpg`` once it listens. Each client gets the file's JPEGs from the
first, over and over (``--once``: one pass, then the connection closes), at ``--fps`` frames a second (0: as fast
as the client reads). Stops on SIGTERM/SIGINT. In-process: :func:`serve` (a daemon thread).
"""

from __future__ import annotations

import argparse
import http.server
import itertools
import pathlib
import signal
import socketserver
import sys
import threading
import time
from collections.abc import Iterable

BOUNDARY = "edgeagentframe"
PATH = "/video.mjpg"


def load_jpegs(path: pathlib.Path) -> list[bytes]:
    """The JPEG of every frame of an MJPEG video, in order (its packets, as the container holds them)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.codec_context.name != "mjpeg":
            raise SystemExit(f"{path}: a {stream.codec_context.name} video; expected MJPEG (e.g. "
                             "python scripts/bench_pipeline_video.py OUT 300 1280x960 mjpg)")
        return [bytes(packet) for packet in container.demux(stream) if packet.size]


class MjpegCamera(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """The server: ``jpegs`` at ``fps`` (0: unpaced) to every client; ``once``: one pass each."""

    daemon_threads = True

    def __init__(self, jpegs: list[bytes], port: int = 0, fps: float = 0.0, once: bool = False) -> None:
        if not jpegs:
            raise ValueError("an MJPEG camera needs at least one JPEG")
        super().__init__(("127.0.0.1", port), _Handler)
        self.jpegs, self.fps, self.once = jpegs, fps, once

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{PATH}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: MjpegCamera

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        if self.path != PATH:
            self.send_error(404, f"no stream at {self.path}; the camera serves {PATH}")
            return
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        camera = self.server
        frames: Iterable[bytes] = camera.jpegs if camera.once else itertools.cycle(camera.jpegs)
        try:
            self._send(frames, 1.0 / camera.fps if camera.fps > 0 else 0.0)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away

    def _send(self, frames: Iterable[bytes], period: float) -> None:
        due = time.monotonic()
        for jpeg in frames:
            if period:
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                due = max(due + period, now - period)  # after a stall, no burst
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            self.wfile.write(head.encode() + jpeg + b"\r\n")
            self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the http.server name)
        return  # quiet: a test or benchmark reads its own output


def serve(jpegs: list[bytes], fps: float = 0.0, once: bool = False) -> MjpegCamera:
    """A camera on a free port, serving in a daemon thread; ``shutdown()`` and ``server_close()`` end it."""
    camera = MjpegCamera(jpegs, 0, fps, once)
    threading.Thread(target=camera.serve_forever, name="mjpeg-camera", daemon=True).start()
    return camera


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=pathlib.Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args()
    camera = MjpegCamera(load_jpegs(args.video), args.port, args.fps, args.once)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"READY {camera.url}", flush=True)
    try:
        camera.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        camera.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
