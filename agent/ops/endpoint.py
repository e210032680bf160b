"""The local HTTP endpoint: ``GET /metrics`` (Prometheus text) and ``GET /healthz`` (JSON).

A stdlib ``ThreadingHTTPServer`` in a daemon thread; each request calls the providers it
was given, so what it serves is read at scrape time. ``/healthz`` answers 200 when the
health provider says healthy and 503 otherwise, with the provider's JSON document either
way. Anything else is 404. A provider that raises gives a 500 and a logged traceback,
never a dead server. Both bodies pass :func:`agent.redact.redact` (no credential is served).

    server = MetricsServer("127.0.0.1:9464", metrics=render_text, health=health_doc)
    server.start()          # raises MetricsError naming the address when it cannot bind
    server.url              # "http://127.0.0.1:9464"
    server.stop()
"""

from __future__ import annotations

import http.server
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.errors import MetricsError
from agent.ops.exposition import CONTENT_TYPE
from agent.redact import redact

__all__ = ["HealthProvider", "MetricsError", "MetricsServer", "split_listen"]

log = logging.getLogger(__name__)

HealthProvider = Callable[[], tuple[bool, dict[str, Any]]]


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` -> ("127.0.0.1", 9464); ``"[::1]:0"`` -> ("::1", 0)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_TIMEOUT_S = 5.0
_REFUSAL_LOG_EVERY_S = 60.0


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler],
                 max_connections: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self.refused = 0
        self._refused_logged_at = -_REFUSAL_LOG_EVERY_S
        self._refused_since_log = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self._refused_since_log += 1
            now = time.monotonic()
            if now - self._refused_logged_at >= _REFUSAL_LOG_EVERY_S:
                log.warning("metrics endpoint: %d connection(s) refused, %d already open (the most it serves)",
                            self._refused_since_log, self.max_connections)
                self._refused_logged_at, self._refused_since_log = now, 0
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that resets or times out is routine: a debug line, not socketserver's traceback on stderr."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("metrics endpoint: connection from %s ended early: %s", client_address[0], exc)
            return
        log.error("metrics endpoint: a request from %s failed", client_address[0], exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    def __init__(self, listen: str, *, metrics: Callable[[], str], health: HealthProvider,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.listen = listen
        self._metrics = metrics
        self._health = health
        self._max_connections = max_connections
        self._timeout_s = timeout_s
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("metrics server not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def refused(self) -> int:
        """Connections closed at once because ``max_connections`` were open."""
        return self._server.refused if self._server is not None else 0

    @property
    def url(self) -> str:
        host, port = self.address
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        host, port = split_listen(self.listen)
        cls = _Server6 if ":" in host else _Server
        handler = _make_handler(self._metrics, self._health, self._timeout_s)
        try:
            self._server = cls((host, port), handler, self._max_connections)
        except OSError as exc:
            raise MetricsError(f"metrics.listen {self.listen}: cannot listen ({exc.strerror or exc}); another "
                               "program (or another edge-agent) uses the port: choose another metrics.listen "
                               "or set metrics.enabled: false") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics on %s/metrics, health on %s/healthz", self.url, self.url)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)
        self._server = None


def _make_handler(metrics: Callable[[], str], health: HealthProvider,
                  timeout_s: float) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "edge-agent"
        timeout = timeout_s  # the socket's: a silent client is dropped (handle() ends on the timeout)

        def do_GET(self) -> None:  # noqa: N802  (the stdlib's name)
            path = self.path.split("?", 1)[0]
            try:
                if path == "/metrics":
                    self._reply(200, CONTENT_TYPE, redact(metrics()).encode("utf-8"))
                elif path == "/healthz":
                    healthy, doc = health()
                    self._reply(200 if healthy else 503, "application/json",
                                redact(json.dumps(doc, separators=(",", ":"))).encode("utf-8"))
                else:
                    self._reply(404, "text/plain; charset=utf-8", b"not found; try /metrics or /healthz\n")
            except Exception:  # noqa: BLE001  a provider's bug is a 500 and a log line, the server goes on
                log.exception("serving %s failed", path)
                self._reply(500, "text/plain; charset=utf-8", b"internal error; see the agent's log\n")

        def _reply(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the stdlib's signature)
            log.debug("%s " + format, self.address_string(), *args)

    return Handler
