"""The HTTP plumbing of the fake Ollama (:mod:`tests.fakes.ollama`): a threading server that can drop
its connections, a handler that hands every request to the fake, and the small helpers that notice a
client that went away and write Ollama's timestamps."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import json
import select
import socket
import sys
import threading
import time
from typing import Any

__all__ = ["Handler", "Server", "client_gone", "details", "full_name", "now", "rfc3339", "sleep_unless_gone",
           "write_ndjson"]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY, as Go's net/http (Ollama) sets on every connection
    server_version = "FakeOllama"
    sys_version = ""
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read the record, not stderr

    def do_GET(self) -> None:
        self.server.fake._dispatch(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._dispatch(self, "POST")

    def do_DELETE(self) -> None:
        self.server.fake._dispatch(self, "DELETE")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: Any) -> None:
        self.fake = fake
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about a client that reset its connection (a killed gateway), as Ollama is; anything else as usual."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)


def client_gone(sock: socket.socket) -> bool:
    """True when the peer has closed the connection (readable, and a peek reads nothing)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def sleep_unless_gone(sock: socket.socket, seconds: float) -> bool:
    """Sleep ``seconds``; return True at once if the client closes the connection meanwhile."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            readable, _, _ = select.select([sock], [], [], min(left, 0.05))
            if readable and sock.recv(1, socket.MSG_PEEK) == b"":
                return True
        except OSError:
            return True
    return client_gone(sock) if seconds > 0 else False


def full_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def details() -> dict[str, Any]:
    return {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama", "clip"],
            "parameter_size": "7B", "quantization_level": "Q4_0"}


def rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # Go prints nanoseconds


def now() -> str:
    return rfc3339(datetime.datetime.now(datetime.timezone.utc))


def write_ndjson(handler: Handler, lines: list[dict[str, Any]]) -> bool:
    """Answer 200 with ``lines`` as chunked NDJSON; False when the client left meanwhile."""
    try:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/x-ndjson")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for line in lines:
            data = json.dumps(line).encode() + b"\n"
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
    except OSError:
        return False
    return True
