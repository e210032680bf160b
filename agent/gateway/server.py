"""The gateway's gRPC server: :func:`serve` builds and starts it, :class:`GatewayServer` stops it.

    server = await serve(load_gateway_config(None))     # 127.0.0.1:50061, Ollama on 127.0.0.1:11434
    ...                                                 # server.address, server.port
    await server.stop()                                 # health NOT_SERVING first, then a graceful stop

Beside ``edge_agent.v1.Escalation`` it runs the standard health service (see
:mod:`agent.gateway.health`) and, with ``reflection: true``, server
reflection. It listens on ``config.listen`` (``HOST:PORT``, port 0 for a free
one, or ``unix:/path``), in plain text or with TLS (``config.tls``; with
``client_ca_file``, mutual TLS). ``auth.tokens_file`` makes every ``Describe``
carry a bearer token (:mod:`agent.gateway.auth`).

Admission (:mod:`agent.gateway.admission`): an interceptor authenticates and
admits each ``Describe`` before gRPC reads its request, so at most
``2 * parallel`` requests are in memory at once (the rest of the queue waits unread); there is no gRPC-wide cap
on concurrent calls (``maximum_concurrent_rpcs`` counted every agent's health
watch, and 34 connected agents locked every ``Describe`` out).

Message size: the receive limit is ``limits.max_message_bytes`` (6 MiB by
default), above ``limits.max_image_bytes`` (2 MiB), so an oversized image
reaches the handler and gets the gateway's INVALID_ARGUMENT message; only a
request above the receive limit is refused by gRPC itself (RESOURCE_EXHAUSTED,
details "Received message larger than max ...").

Connections: at most ``limits.max_streams_per_connection`` streams each; one
that has not finished its handshake in ``limits.handshake_timeout_s`` is closed,
one without calls for ``limits.max_connection_idle_s`` is sent away, and one
older than ``limits.max_connection_age_s`` is asked to reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agent.errors import GatewayError
from agent.gateway.admission import CallGate
from agent.gateway.auth import TokenTable
from agent.gateway.config import GatewayConfig, GatewayTlsConfig
from agent.gateway.health import DetailedHealthServicer, HealthMonitor
from agent.gateway.looplag import LoopLag
from agent.gateway.pool import VlmPool
from agent.gateway.question import load_inspection
from agent.gateway.service import EscalationService
from agent.gateway.stats import CallStats
from agent.gateway.unix_socket import open_unix_socket
from agent.gateway.vlm import OllamaVlm, Vlm
from agent.redact import redact
from agent.wire import escalation_pb2 as pb
from agent.wire import escalation_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "GatewayServer", "make_vlm", "ollama_words", "serve"]

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Escalation"].full_name  # "edge_agent.v1.Escalation"
DESCRIBE_METHOD = f"/{SERVICE_NAME}/Describe"
_AGE_GRACE_MS = 30_000  # calls on a connection past max_connection_age get this long to finish


class GatewayServer:
    """A started gateway. ``address`` is what a client dials (``127.0.0.1:50061``, ``unix:/path``)."""

    def __init__(self, server: grpc.aio.Server, address: str, port: int | None, service: EscalationService,
                 monitor: HealthMonitor, vlm: Vlm, stats: CallStats, summary_interval_s: float) -> None:
        self.address = address
        self.port = port
        self.service = service
        self.health = monitor
        self.stats = stats
        self._server = server
        self._vlm = vlm
        self.pool = vlm if isinstance(vlm, VlmPool) else None
        """The Ollama servers' pool when ``ollama.servers`` names several (per-server /metrics and /healthz)."""
        self._summary_task: asyncio.Task[None] | None = None
        if summary_interval_s > 0:
            self._summary_task = asyncio.create_task(self._summaries(summary_interval_s), name="gateway-summary")
        self.loop_lag = LoopLag()
        self.loop_lag.start()
        self._stopped = False

    async def stop(self, grace: float | None = 5.0) -> None:
        """Health NOT_SERVING, stop taking calls, let calls in progress finish for ``grace`` seconds
        (None: wait for them), then close the connection to Ollama. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.stop()
        await self._server.stop(grace)
        if self._summary_task is not None:
            self._summary_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._summary_task
        await self.loop_lag.stop()
        self._log_summary()
        self.service.decoder.close()
        await self._vlm.aclose()
        log.info("gateway stopped", extra={"address": self.address, "calls": self.stats.total_calls})

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()

    async def _summaries(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self._log_summary()

    def _log_summary(self) -> None:
        s = self.stats.take_summary()
        if s.calls == 0:
            return
        admission = self.service.admission
        log.info("gateway summary", extra={
            "calls": s.calls, "by_code": ",".join(f"{k}={v}" for k, v in sorted(s.by_code.items())),
            "p50_ms": round(s.p50_ms, 1), "p99_ms": round(s.p99_ms, 1), "vlm_p50_ms": round(s.vlm_p50_ms, 1),
            "running": admission.running, "waiting": admission.waiting, "total_calls": s.total_calls,
            "health": "SERVING" if self.health.serving else f"NOT_SERVING ({self.health.reason})"})


async def serve(config: GatewayConfig, *, vlm: Vlm | None = None) -> GatewayServer:
    """Build, bind and start the gateway; return once it takes calls. Raises GatewayError when it
    cannot listen or read its TLS files, ConfigError when its taxonomy is bad. ``vlm`` defaults to an
    :class:`OllamaVlm` from ``config.ollama``."""
    limits = config.limits
    inspection = load_inspection(config)  # the question's static parts: read, checked and built once
    credentials = _server_credentials(config.tls) if config.tls is not None else None
    tokens = TokenTable.from_file(config.auth.tokens_file) if config.auth.tokens_file is not None else None
    vlm = vlm if vlm is not None else make_vlm(config)
    stats = CallStats()
    health_servicer = DetailedHealthServicer()  # Check answers carry a short public reason
    monitor = HealthMonitor(health_servicer, vlm, [SERVICE_NAME], config.health_interval_s)
    health_servicer.monitor = monitor
    if isinstance(vlm, (OllamaVlm, VlmPool)):
        vlm.on_load_end = monitor.poke  # a finished model load shows in health at once
    service = EscalationService(vlm, config, stats, on_vlm_trouble=monitor.poke, inspection=inspection)
    gate = CallGate(DESCRIBE_METHOD, service.admission, tokens, service.describe, on_refused=stats.refused,
                    deserializer=service.parse_request)  # fields counted before the parse: see wirecheck

    server = grpc.aio.server(interceptors=[gate], options=_server_options(config))
    pb_grpc.add_EscalationServicer_to_server(service, server)  # type: ignore[no-untyped-call]  # generated
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        reflection.enable_server_reflection([SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server)

    try:
        bound = (server.add_secure_port(config.listen, credentials) if credentials is not None
                 else server.add_insecure_port(config.listen))
    except RuntimeError as exc:
        await vlm.aclose()
        raise GatewayError(f"cannot listen on {config.listen!r} ({exc}); the address is in use or not "
                           "available on this host (listen: HOST:PORT or unix:/path)") from exc
    try:
        open_unix_socket(config.listen, config.socket)  # before start: no call is accepted with the wrong mode
    except GatewayError:
        await vlm.aclose()
        raise
    address, port = _dial_address(config.listen, bound)
    await server.start()
    await monitor.start(first_check_timeout_s=config.ollama.connect_timeout_s + 2.0)
    log.info("gateway listening", extra={
        "address": address, "tls": "mutual" if config.tls and config.tls.client_ca_file else bool(config.tls),
        "auth": _auth_words(config, tokens), "reflection": config.reflection,
        "ollama": ollama_words(config), "model": config.ollama.model, "parallel": limits.parallel,
        "queue": limits.queue, "health": "SERVING" if monitor.serving else f"NOT_SERVING ({monitor.reason})"})
    return GatewayServer(server, address, port, service, monitor, vlm, stats, config.summary_interval_s)


def make_vlm(config: GatewayConfig) -> Vlm:
    """An OllamaVlm for one Ollama server, a VlmPool for several (``ollama.servers``)."""
    servers = config.ollama.server_list()
    if len(servers) > 1:
        return VlmPool.from_config(config.ollama, config.pool)
    return OllamaVlm.from_config(config.ollama.model_copy(update={"host": servers[0].url, "servers": []}))


def ollama_words(config: GatewayConfig) -> str:
    """The Ollama server(s) for logs and metrics: a URL, or a comma list of the pool's (redacted)."""
    return ",".join(redact(s.url) for s in config.ollama.server_list())


def _server_options(config: GatewayConfig) -> list[tuple[str, int]]:
    limits = config.limits
    options = [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
        # agents may keep idle channels alive with pings every 10 s or more
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC sets SO_REUSEPORT by default: a second gateway on the same port would silently share it
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
        ("grpc.server_handshake_timeout_ms", int(limits.handshake_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", int(limits.max_connection_idle_s * 1000)),
    ]
    if limits.max_connection_age_s > 0:
        options += [("grpc.max_connection_age_ms", int(limits.max_connection_age_s * 1000)),
                    ("grpc.max_connection_age_grace_ms", _AGE_GRACE_MS)]
    return options


def _auth_words(config: GatewayConfig, tokens: TokenTable | None) -> str:
    """How callers are authenticated, for the start-up log line."""
    ways = [f"bearer tokens ({len(tokens.names)} clients)"] if tokens is not None else []
    if config.tls is not None and config.tls.client_ca_file is not None:
        ways.append("client certificates")
    if ways:
        return " and ".join(ways)
    return "none (insecure: true)" if config.insecure else "none (loopback only)"


def _dial_address(listen: str, bound: int) -> tuple[str, int | None]:
    if listen.startswith("unix:"):
        return listen, None
    host = listen.rpartition(":")[0]
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"{host}:{bound}", bound


def _server_credentials(tls: GatewayTlsConfig) -> grpc.ServerCredentials:
    key = _read_pem(tls.key_file, "tls.key_file")
    chain = _read_pem(tls.cert_file, "tls.cert_file")
    if tls.client_ca_file is None:
        return grpc.ssl_server_credentials([(key, chain)])
    ca = _read_pem(tls.client_ca_file, "tls.client_ca_file")
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=True)


def _read_pem(path: pathlib.Path, field: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GatewayError(f"{field}: cannot read {path} ({exc.strerror}); expected a PEM file") from exc
    if b"-----BEGIN " not in data:
        raise GatewayError(f"{field}: {path} is not PEM (no '-----BEGIN' line); expected a PEM certificate or key")
    return data
