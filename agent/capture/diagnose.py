"""What OpenCV cannot say about a stream that did not open, and its libraries' own log lines.

``cv2.VideoCapture`` answers a failed open with ``isOpened() == False`` and nothing else, so
:func:`stream_open_failure` asks the network itself: one TCP connection to the camera's host
and port tells a refused connection, a name that does not resolve and a host that does not
answer apart from a stream that the camera accepted but did not serve (path, credentials).

OpenCV (``[ WARN:0@...] global cap.cpp ...``) and FFmpeg (``[tcp @ 0x...] Connection ...
refused``) write to stderr themselves, past the agent's logging, once per failed open, so
once per reconnect attempt. The agent reports those failures itself (the camera's state
and reason), so :func:`quiet_video_libraries` has both libraries keep quiet, unless the
environment asks for their lines: ``OPENCV_LOG_LEVEL`` (OpenCV's own, e.g. ``INFO``) and
``OPENCV_FFMPEG_LOGLEVEL`` (FFmpeg's numeric level, e.g. 32 for info) or
``OPENCV_FFMPEG_DEBUG``, which are then left as they are. It reads the environment once, at
the start of every ``edge-agent`` command (and, for other callers, before the first capture
:class:`agent.capture.sources.OpenCVSource` opens): FFmpeg's level is read once per process,
when OpenCV's FFmpeg backend starts, so it must come before any video is opened or written.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.parse
from collections.abc import MutableMapping

import cv2

__all__ = ["quiet_video_libraries", "stream_open_failure"]

logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
_AV_LOG_QUIET = "-8"
_configured = False
_lock = threading.Lock()


def quiet_video_libraries(env: MutableMapping[str, str] | None = None) -> None:
    """Silence OpenCV's warnings and FFmpeg's log lines unless ``env`` (default ``os.environ``) sets
    their levels. Runs once per process; later calls do nothing."""
    global _configured
    with _lock:
        if _configured:
            return
        _configured = True
        env = os.environ if env is None else env
        if "OPENCV_FFMPEG_LOGLEVEL" not in env and "OPENCV_FFMPEG_DEBUG" not in env:
            env["OPENCV_FFMPEG_LOGLEVEL"] = _AV_LOG_QUIET  # OpenCV reads it when its FFmpeg backend starts
        if "OPENCV_LOG_LEVEL" not in env:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        logger.debug("OpenCV log level %s, FFmpeg log level %s", env.get("OPENCV_LOG_LEVEL", "ERROR"),
                     env.get("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_FFMPEG_DEBUG"))


def stream_open_failure(url: str, desc: str, open_timeout_s: float) -> str:
    """Why the stream at ``url`` (described without credentials as ``desc``) did not open, as far as one
    TCP connection to its host tells; the message of the SourceError."""
    parts = urllib.parse.urlsplit(url)
    try:
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:  # a port that is not a number: FFmpeg refused the URL itself
        host, port = None, None
    head = f"camera source {desc!r}"
    if not host or port is None:
        return f"{head}: could not open the stream (check the URL: expected rtsp://HOST[:PORT]/PATH)"
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=min(2.0, open_timeout_s)):
            pass
    except socket.gaierror:
        return f"{head}: cannot resolve the host {host!r} (check the name, or give the camera's IP address)"
    except ConnectionRefusedError:
        return (f"{head}: connection refused by {where} (is the camera on and its stream server running, "
                "and is the port right?)")
    except OSError as exc:  # a timeout, no route to the host, a network that is down
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return f"{head}: cannot connect to {where}: {reason} (check that the camera is reachable from this box)"
    return (f"{head}: could not open the stream within {open_timeout_s:g} s: {where} accepts connections but "
            "did not serve the stream (check the URL path and the credentials)")
