"""The /metrics + /healthz server stays bounded under idle connections: few threads, idle sockets dropped."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from agent.ops.endpoint import MetricsServer


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_idle_connections_cannot_take_the_server_or_its_threads() -> None:
    server = MetricsServer("127.0.0.1:0", metrics=lambda: "", health=lambda: (True, {"status": "ok"}),
                           max_connections=8, timeout_s=0.5)
    server.start()
    idle: list[socket.socket] = []
    try:
        threads_before = threading.active_count()
        for _ in range(100):  # sockets that connect and never send a request
            idle.append(socket.create_connection(server.address, timeout=2))
        time.sleep(0.2)
        assert threading.active_count() - threads_before <= 8  # one thread per served connection, no more
        end = time.monotonic() + 5.0
        status = 0
        while status != 200 and time.monotonic() < end:  # the idle ones are dropped after timeout_s
            try:
                status = get(f"{server.url}/healthz")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        assert status == 200
        assert server.refused >= 80  # the rest were closed at once, without a thread
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_a_request_sent_slowly_past_the_timeout_is_dropped() -> None:
    server = MetricsServer("127.0.0.1:0", metrics=lambda: "x 1\n", health=lambda: (True, {}), timeout_s=0.3)
    server.start()
    try:
        with socket.create_connection(server.address, timeout=3) as sock:
            sock.sendall(b"GET /metr")
            time.sleep(0.6)
            assert sock.recv(1024) == b""  # closed by the server, nothing answered
        assert get(f"{server.url}/metrics") == 200
    finally:
        server.stop()


def test_a_client_that_resets_mid_request_leaves_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    server = MetricsServer("127.0.0.1:0", metrics=lambda: "x 1\n", health=lambda: (True, {}), timeout_s=2.0)
    server.start()
    try:
        for _ in range(5):  # half a request line, then an RST (SO_LINGER 0) instead of a FIN
            sock = socket.create_connection(server.address, timeout=2)
            sock.sendall(b"GET /metr")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        time.sleep(0.3)
        assert get(f"{server.url}/metrics") == 200
    finally:
        server.stop()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
