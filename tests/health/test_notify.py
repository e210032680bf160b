"""The sd_notify protocol against a real datagram socket: paths, abstract sockets, the watchdog
variables, UTF-8 status lines, and a socket that went away."""

from __future__ import annotations

import logging
import os
import time

import pytest

from agent.ops.notify import Notifier, socket_address
from tests.health.conftest import NotifyListener


@pytest.mark.parametrize(("value", "expected"), [
    ("/run/systemd/notify", "/run/systemd/notify"),  # a filesystem socket: as is
    ("@/org/freedesktop/systemd1/notify", b"\0/org/freedesktop/systemd1/notify"),  # abstract: @ becomes NUL
])
def test_socket_address(value: str, expected: str | bytes) -> None:
    assert socket_address(value) == expected


@pytest.mark.parametrize("value", ["relative/path", "@", "vsock:2:1234"])
def test_socket_address_refuses_what_it_cannot_reach(value: str) -> None:
    with pytest.raises(ValueError, match="neither a socket path"):
        socket_address(value)


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier.from_environ({})
    assert not n.enabled and n.watchdog_interval_s is None
    assert n.notify(READY=1) is False


def test_one_datagram_with_every_assignment(notify_socket: tuple[str, NotifyListener]) -> None:
    address, listener = notify_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert n.notify(READY=1, STATUS="Prüfung läuft:\n2 Kameras")  # UTF-8, and made one line
    _, msg = listener.wait_for(lambda m: "READY" in m, 2.0) or (0.0, {})
    assert msg == {"READY": "1", "STATUS": "Prüfung läuft: 2 Kameras"}
    n.close()


def test_a_status_line_hides_credentials(notify_socket: tuple[str, NotifyListener]) -> None:
    address, listener = notify_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert n.status("camera cam1: rtsp://cam/user=admin&password=s3cret&channel=1 reconnecting")
    _, msg = listener.wait_for(lambda m: "STATUS" in m, 2.0) or (0.0, {})
    assert msg == {"STATUS": "camera cam1: rtsp://cam/user=***&password=***&channel=1 reconnecting"}
    n.close()


def test_reloading_carries_the_monotonic_time(notify_socket: tuple[str, NotifyListener]) -> None:
    """RELOADING=1 with MONOTONIC_USEC= (CLOCK_MONOTONIC in microseconds), as Type=notify-reload requires."""
    address, listener = notify_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    _, msg = listener.wait_for(lambda m: "RELOADING" in m, 2.0) or (0.0, {})
    assert msg["RELOADING"] == "1" and msg["STATUS"] == "reloading the config"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after
    n.close()


def test_abstract_socket(abstract_notify_socket: tuple[str, NotifyListener]) -> None:
    address, listener = abstract_notify_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert n.stopping("bye")
    assert listener.wait_for(lambda m: m.get("STOPPING") == "1" and m.get("STATUS") == "bye", 2.0)
    n.close()


@pytest.mark.parametrize(("env", "interval"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),  # WatchdogSec=30: ping every 15 s
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "{pid}"}, 15.0),  # meant for us
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process: ignore
    ({"WATCHDOG_USEC": "soon"}, None),  # not a number: no watchdog (logged)
    ({}, None),  # no WatchdogSec=
])
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str], interval: float | None) -> None:
    env = {k: v.format(pid=os.getpid()) for k, v in env.items()}
    n = Notifier.from_environ({"NOTIFY_SOCKET": "/run/systemd/notify", **env})
    assert n.watchdog_interval_s == interval


def test_a_vanished_socket_is_logged_once_and_never_raises(caplog: pytest.LogCaptureFixture,
                                                           notify_socket: tuple[str, NotifyListener]) -> None:
    address, listener = notify_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert n.watchdog()
    listener.close()
    os.unlink(address)
    caplog.set_level(logging.WARNING, logger="agent.ops.notify")
    for _ in range(5):
        assert n.watchdog() is False
    # the old connection is refused, the retry finds no socket file: that error, once
    logged = [r.getMessage() for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(logged) == 1 and "No such file" in logged[0]


def test_a_restarted_manager_gets_the_next_message(notify_socket: tuple[str, NotifyListener]) -> None:
    """systemd re-executed (daemon-reexec) binds a new socket at the same path: the notifier, still
    connected to the old one, reconnects once and the message is not lost."""
    address, first = notify_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert n.watchdog() and first.wait_for(lambda m: m.get("WATCHDOG") == "1", 2.0)
    first.close()
    os.unlink(address)
    second = NotifyListener(address)
    try:
        assert n.status("still here")
        assert second.wait_for(lambda m: m.get("STATUS") == "still here", 2.0)
    finally:
        second.close()
        n.close()
