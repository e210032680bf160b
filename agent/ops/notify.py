"""The systemd notification protocol (``sd_notify``), without libsystemd.

systemd passes ``$NOTIFY_SOCKET`` to a ``Type=notify`` service: a filesystem path
(``/run/systemd/notify``) or a Linux abstract socket (``@/org/freedesktop/...``,
the ``@`` standing for a leading NUL byte). Each message is one datagram on an
``AF_UNIX``/``SOCK_DGRAM`` socket with newline-separated ``KEY=VALUE`` lines,
UTF-8 encoded (``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``RELOADING=1``, ``STOPPING=1``).
Without ``$NOTIFY_SOCKET`` every call does nothing, as the C library does.

``WatchdogSec=`` in the unit sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``); the
watchdog is this process's only if ``$WATCHDOG_PID`` is unset or is our PID.
Pings are due at half the interval (:attr:`Notifier.watchdog_interval_s`).

    notifier = Notifier.from_environ()
    notifier.notify(READY=1, STATUS="inspecting 2 cameras")

A send that fails (systemd gone, socket full) is logged once per kind of error
and never raised: a service must not die because its manager went away.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

from agent.redact import redact

__all__ = ["Notifier", "socket_address"]

log = logging.getLogger(__name__)


def socket_address(value: str) -> str | bytes:
    """The ``connect()`` address for a ``$NOTIFY_SOCKET`` value: a path as is, ``@name`` as the
    abstract socket ``\\0name``. ValueError for anything else (``vsock:`` is for VMs, not supported)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    raise ValueError(f"NOTIFY_SOCKET={value!r} is neither a socket path (/...) nor an abstract socket (@...)")


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


class Notifier:
    """Sends sd_notify messages to ``address`` (None: a no-op notifier)."""

    def __init__(self, address: str | bytes | None, *, watchdog_usec: int = 0) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec if address is not None else 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._logged: set[str] = set()

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET`` of ``env`` (default ``os.environ``), with the watchdog
        interval of ``$WATCHDOG_USEC`` when ``$WATCHDOG_PID`` is unset or equals ``pid`` (our PID)."""
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        address: str | bytes | None = None
        if raw:
            try:
                address = socket_address(raw)
            except ValueError as exc:
                log.warning("%s; not sending service notifications", exc)
        usec = 0
        watchdog_pid = env.get("WATCHDOG_PID", "")
        mine = not watchdog_pid or watchdog_pid == str(os.getpid() if pid is None else pid)
        if env.get("WATCHDOG_USEC") and mine:
            try:
                usec = int(env["WATCHDOG_USEC"])
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a number of microseconds; watchdog pings are off",
                            env["WATCHDOG_USEC"])
            if usec < 0:
                usec = 0
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between watchdog pings (half of ``WATCHDOG_USEC``); None when no watchdog is set."""
        return self.watchdog_usec / 2_000_000 if self.enabled and self.watchdog_usec > 0 else None

    def notify(self, **assignments: object) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram (``STATUS`` is made one line). True when sent;
        False when there is no socket or the send failed (logged once per error)."""
        if self.address is None or not assignments:
            return False
        # STATUS= is shown by `systemctl status` to anyone: a camera's error may quote its URL
        payload = "\n".join(f"{k}={redact(_one_line(v))}" for k, v in assignments.items()).encode("utf-8")
        with self._lock:
            # a socket connected earlier may point at a manager that was re-executed: one fresh try
            for attempt in (1, 2):
                reused = self._sock is not None
                try:
                    if self._sock is None:
                        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                        self._sock.connect(self.address)
                    self._sock.sendall(payload)
                    return True
                except OSError as exc:
                    self._close_locked()
                    if reused and attempt == 1:
                        continue
                    key = f"{type(exc).__name__}:{exc.errno}"
                    if key not in self._logged:
                        self._logged.add(key)
                        log.warning("cannot notify systemd at %r: %s", self.address, exc)
                    return False
        return False

    def ready(self, status: str) -> bool:
        return self.notify(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.notify(STATUS=status)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def reloading(self, status: str = "reloading the config") -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (the time of the request on CLOCK_MONOTONIC, which systemd
        253+ requires for ``Type=notify-reload``); ``READY=1`` (:meth:`ready`) must follow when done."""
        return self.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
                           STATUS=status)

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify(STOPPING=1, STATUS=status)

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
