"""A systemd stand-in for the notification protocol: a real AF_UNIX datagram socket that records
what the service sends, with the time each datagram arrived."""

from __future__ import annotations

import os
import pathlib
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest


class NotifyListener:
    """Binds ``address`` (a path, or ``\\0name`` for an abstract socket) and records datagrams as
    (monotonic time, {KEY: VALUE}) in a thread."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode("utf-8").split("\n") if "=" in line)
            with self._cond:
                self.messages.append((time.monotonic(), fields))
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[dict[str, str]], bool], timeout: float,
                 after: float = 0.0) -> tuple[float, dict[str, str]] | None:
        """The first message after ``after`` (monotonic) that satisfies ``predicate``; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, m in self.messages:
                    if t > after and predicate(m):
                        return t, m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def times(self, key: str, value: str, start: float = 0.0, end: float = float("inf")) -> list[float]:
        with self._cond:
            return [t for t, m in self.messages if m.get(key) == value and start < t <= end]

    def statuses(self, start: float = 0.0) -> list[str]:
        with self._cond:
            return [m["STATUS"] for t, m in self.messages if "STATUS" in m and t > start]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, NotifyListener]]:
    """(the NOTIFY_SOCKET value, the listener) for a filesystem socket in a short temporary folder
    (AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be longer)."""
    with tempfile.TemporaryDirectory(prefix="sdn-") as folder:
        path = str(pathlib.Path(folder) / "notify.sock")
        listener = NotifyListener(path)
        try:
            yield path, listener
        finally:
            listener.close()


@pytest.fixture
def abstract_notify_socket() -> Iterator[tuple[str, NotifyListener]]:
    """(``@name``, the listener) for a Linux abstract socket, as systemd's own ``@/org/freedesktop/...``."""
    name = f"edge-agent-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = NotifyListener(b"\0" + name.encode())
    try:
        yield "@" + name, listener
    finally:
        listener.close()
