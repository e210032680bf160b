"""The agent's gRPC client of the escalation gateway: one ``grpc.aio`` channel, one ``Describe`` call.

Create it on the event loop that uses it (:meth:`EscalationClient.connect`,
called by :class:`agent.escalation.escalator.Escalator` on its own loop thread).

Channel (:func:`channel_options`):

* Target: ``escalation.gateway`` through :func:`agent.config.escalation.grpc_target`
  (``HOST:PORT``, a list or comma list of IPs, ``dns:///NAME:PORT``, ``unix:/PATH``);
  load balancing ``round_robin`` over every address the target resolves to. A gateway
  killed with calls in progress resets its connection: those calls fail UNAVAILABLE
  before any response and the retry below sends them to another gateway, within the
  same deadline (tests/escalation/test_client_failover.py; docs/fleet.md).
* Client-side health checking (``escalation.health_check``, on by default):
  calls go only to gateways whose ``grpc.health.v1`` status for
  ``edge_agent.v1.Escalation`` is SERVING, so a gateway whose Ollama is down is
  skipped; when none is SERVING a call fails at once with UNAVAILABLE.
* Retry (gRPC service config, api-facts 3.8): UNAVAILABLE is retried once
  (``maxAttempts: 2``) after 0.1 s; nothing else is retried. INVALID_ARGUMENT
  would fail again, ABORTED means the gateway already retried the VLM, and
  RESOURCE_EXHAUSTED is a busy gateway (or an oversized message) that a retry at
  once would only load more. The call's deadline spans both attempts.
* Keepalive (api-facts 3.4): a ping every ``escalation.keepalive_s`` (>= 10 s,
  the gateway's ``min_ping_interval_without_data``), also without calls
  (the gateway permits that), so that a dead connection is noticed while idle;
  10 s to answer a ping. Reconnect backoff capped at 5 s, so that a gateway
  that comes back is used within seconds.
* TLS / mutual TLS from ``escalation.tls`` (:func:`channel_credentials`).
* A bearer token from ``escalation.token_file`` (:func:`read_token`), sent as
  ``authorization: Bearer TOKEN`` with every ``Describe`` (health checks need none).

Status mapping (:func:`classify`): the gRPC code of a failed call gives the
event's escalation status and whether the failure counts against the circuit
breaker (see :mod:`agent.escalation.breaker`; marked "a failure"):

* OK (an answer): ``answered``
* INVALID_ARGUMENT: ``rejected``
* RESOURCE_EXHAUSTED with "Received message larger than max ...": ``rejected``
  (gRPC's own size limit, not a busy gateway)
* RESOURCE_EXHAUSTED (the gateway's queue is full): ``rate_limited``, a failure
* DEADLINE_EXCEEDED: ``timeout``, a failure
* UNAVAILABLE (Ollama unreachable or busy; or the model still loading: details
  start with "loading:"): ``unavailable``, a failure; retried once by the channel.
  When client-side health checking held the call back (no gateway SERVING), the
  reason gives the gateways' own short phrase ("loading model", "VLM unreachable"
  ...), asked over a second channel without health checking at most every 5 s
* FAILED_PRECONDITION (the model cannot serve: not pulled, no vision, out of
  memory, a runner that keeps dying, a context too small for the frame; permanent
  until the gateway host is fixed): ``unavailable``, a failure, never retried
* ABORTED (the VLM's answer did not match the schema): ``invalid_answer``
* NOT_FOUND, OUT_OF_RANGE, ALREADY_EXISTS: ``rejected``
* CANCELLED: ``unavailable``
* anything else (UNKNOWN, INTERNAL, UNIMPLEMENTED, UNAUTHENTICATED (a missing or
  wrong token), PERMISSION_DENIED, DATA_LOSS): ``unavailable``, a failure

The event's ``escalation.reason`` is ``"<CODE>: <the gateway's details>"``, so that
``UNAVAILABLE: loading: ...`` (wait) and ``FAILED_PRECONDITION: ...`` (fix the
gateway host) tell apart what the status alone does not.
An answer whose verdict is unspecified is ``invalid_answer``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
import time
from typing import Any

import grpc
from grpc_health.v1.health_pb2 import HealthCheckRequest
from grpc_health.v1.health_pb2_grpc import HealthStub

from agent.config.escalation import EscalationConfig, EscalationTlsConfig
from agent.core.decision import Verdict
from agent.core.event import EscalationStatus
from agent.errors import ConfigError
from agent.escalation.merge import VlmAnswer, VlmDefect
from agent.redact import redact
from agent.wire import escalation_pb2 as pb
from agent.wire import escalation_pb2_grpc as pb_grpc
from agent.wire.health import REASON_KEY

__all__ = ["SERVICE", "CallResult", "EscalationClient", "channel_credentials", "channel_options", "classify",
           "read_token", "to_answer"]

SERVICE = "edge_agent.v1.Escalation"
_VERDICTS: dict[int, Verdict] = {pb.VERDICT_PASS: "pass", pb.VERDICT_DEFECT: "defect",
                                 pb.VERDICT_UNCERTAIN: "uncertain"}
_SEVERITIES: dict[int, Any] = {pb.SEVERITY_LOW: "low", pb.SEVERITY_MEDIUM: "medium", pb.SEVERITY_HIGH: "high"}
_NAME_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}:")  # a gateway tokens file's NAME: part
HEALTH_REASON_KEY = REASON_KEY
"""The trailing metadata key of the gateway's short NOT_SERVING phrase (:mod:`agent.wire.health`)."""
_WHY_EVERY_S = 5.0
_WHY_TIMEOUT_S = 0.5
_UNHEALTHY_HINT = (" (the gateway's health service says NOT_SERVING: its VLM is unreachable, still loading the "
                   "model, or cannot serve it; see the gateway's log or `edge-agent doctor`)")


@dataclasses.dataclass(frozen=True)
class CallResult:
    """How one Describe call ended."""

    status: EscalationStatus  # answered, rejected, timeout, unavailable, invalid_answer or rate_limited
    reason: str | None
    answer: VlmAnswer | None
    latency_ms: float
    code: str  # the gRPC status code's name, "OK" for an answer
    healthy: bool  # False: a failure for the circuit breaker


_CODES: dict[grpc.StatusCode, tuple[EscalationStatus, bool]] = {
    grpc.StatusCode.OK: ("answered", True),
    grpc.StatusCode.INVALID_ARGUMENT: ("rejected", True),
    grpc.StatusCode.NOT_FOUND: ("rejected", True),
    grpc.StatusCode.OUT_OF_RANGE: ("rejected", True),
    grpc.StatusCode.ALREADY_EXISTS: ("rejected", True),
    grpc.StatusCode.DEADLINE_EXCEEDED: ("timeout", False),
    grpc.StatusCode.UNAVAILABLE: ("unavailable", False),
    grpc.StatusCode.FAILED_PRECONDITION: ("unavailable", False),
    grpc.StatusCode.ABORTED: ("invalid_answer", True),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("rate_limited", False),
    grpc.StatusCode.CANCELLED: ("unavailable", True),
}


def classify(code: grpc.StatusCode, details: str) -> tuple[EscalationStatus, bool]:
    """(escalation status, healthy) for a call that ended with ``code`` (see the module doc's table)."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return "rejected", True  # gRPC's own message-size limit, not a busy gateway: never retry it
    return _CODES.get(code, ("unavailable", False))


def to_answer(reply: pb.DescribeResponse) -> VlmAnswer | None:
    """The answer in agent terms; None when the reply has no verdict (an invalid answer)."""
    verdict = _VERDICTS.get(reply.verdict)
    if verdict is None:
        return None
    return VlmAnswer(
        verdict=verdict,
        tags=tuple((t.label, t.confidence if math.isfinite(t.confidence) else 0.0) for t in reply.tags if t.label),
        defects=tuple(VlmDefect(d.type, d.location, _SEVERITIES.get(d.severity, "unspecified"))
                      for d in reply.defects),
        description=reply.description, model=reply.model, vlm_ms=reply.vlm_ms, gateway_ms=reply.gateway_ms,
        notes=tuple(redact(n[:300]) for n in reply.notes[:4] if n))


def service_config(health_check: bool) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{
            "name": [{"service": SERVICE}],
            "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0.1s", "maxBackoff": "0.5s",
                            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
            "waitForReady": False,
        }],
    }
    if health_check:
        cfg["healthCheckConfig"] = {"serviceName": SERVICE}
    return cfg


def channel_options(config: EscalationConfig) -> list[tuple[str, Any]]:
    """The channel arguments for ``config`` (see the module doc)."""
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", json.dumps(service_config(config.health_check))),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", int(config.keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging an idle connection
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.min_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5_000),
        ("grpc.primary_user_agent", "edge-agent"),
    ]
    if config.tls is not None and config.tls.server_name:
        options.append(("grpc.ssl_target_name_override", config.tls.server_name))
    return options


def channel_credentials(tls: EscalationTlsConfig) -> grpc.ChannelCredentials:
    """TLS credentials from the PEM files of ``escalation.tls``; ConfigError naming the field if unreadable."""
    ca = _read_pem(tls.ca_file, "escalation.tls.ca_file") if tls.ca_file is not None else None
    key = _read_pem(tls.key_file, "escalation.tls.key_file") if tls.key_file is not None else None
    cert = _read_pem(tls.cert_file, "escalation.tls.cert_file") if tls.cert_file is not None else None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def read_token(config: EscalationConfig) -> str | None:
    """The bearer token in ``escalation.token_file`` (None when unset); ConfigError saying what is wrong."""
    path = config.token_file
    if path is None:
        return None
    field = "escalation.token_file"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{field}: cannot read {path} ({why}); expected a file holding the token"]) from exc
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1 or " " in lines[0] or not lines[0].isascii() or len(lines[0]) < 24:
        raise ConfigError([f"{field}: {path} holds {len(lines)} line(s); expected one token of at least 24 "
                           "printable characters without spaces (the TOKEN of the gateway's NAME:TOKEN line)"])
    token = lines[0]
    if _NAME_PREFIX.match(token) and len(token.partition(":")[2]) >= 24:
        raise ConfigError([f"{field}: {path} looks like a NAME:TOKEN line; put only the TOKEN part in it"])
    return token


def _read_pem(path: pathlib.Path, field: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{field}: cannot read {path} ({exc.strerror}); expected a PEM file"]) from exc
    if b"-----BEGIN " not in data:
        raise ConfigError([f"{field}: {path} is not PEM (no '-----BEGIN' line); expected a PEM certificate or key"])
    return data


class EscalationClient:
    """Describe calls over one channel. ``__init__`` takes a ready channel (tests hand in their own)."""

    def __init__(self, channel: grpc.aio.Channel, target: str, token: str | None = None,
                 probe: grpc.aio.Channel | None = None) -> None:
        self._channel = channel
        self._stub = pb_grpc.EscalationStub(channel)  # type: ignore[no-untyped-call]  # generated
        self.target = target
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._probe = probe
        """A channel without client-side health checking, to ask the gateways why they are NOT_SERVING."""
        self._why: tuple[float, str] = (-_WHY_EVERY_S, "")

    @classmethod
    def connect(cls, config: EscalationConfig, credentials: grpc.ChannelCredentials | None = None,
                token: str | None = None) -> EscalationClient:
        """A client for ``config.gateway``; call it on the event loop that will use it. The channel
        connects lazily, on the first call. ``token`` defaults to :func:`read_token`'s."""
        target = config.target
        if target is None:
            raise ValueError("escalation.gateway is not set; there is nothing to connect to")
        options = channel_options(config)
        channels = [grpc.aio.secure_channel(target, credentials, options=opts) if credentials is not None
                    else grpc.aio.insecure_channel(target, options=opts)
                    for opts in (options, channel_options(config.model_copy(update={"health_check": False})))]
        return cls(channels[0], target, token if token is not None else read_token(config),
                   probe=channels[1] if config.health_check else None)

    async def describe(self, request: pb.DescribeRequest, timeout: float) -> CallResult:
        """One call with a deadline of ``timeout`` seconds; never raises for a gRPC failure."""
        start = time.perf_counter()
        try:
            reply: pb.DescribeResponse = await self._stub.Describe(request, timeout=timeout,
                                                                      metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            latency = (time.perf_counter() - start) * 1000.0
            code, details = exc.code(), exc.details() or ""
            status, healthy = classify(code, details)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                details = f"no answer within {timeout:.1f} s ({details or 'deadline exceeded'})"
            elif code == grpc.StatusCode.UNAVAILABLE and "backend unhealthy" in details:
                why = await self._unhealthy_why()
                details += f" (the gateway's health service says NOT_SERVING: {why})" if why else _UNHEALTHY_HINT
            return CallResult(status, redact(f"{code.name}: {details}"), None, latency, code.name, healthy)
        latency = (time.perf_counter() - start) * 1000.0
        answer = to_answer(reply)
        if answer is None:
            return CallResult("invalid_answer", "the gateway's answer has no verdict", None, latency, "OK", True)
        return CallResult("answered", None, answer, latency, "OK", True)

    async def _unhealthy_why(self) -> str:
        """The gateways' own short phrase for NOT_SERVING ("loading model", "VLM unreachable", ...: their
        health service's public reason), asked over the probe channel at most every _WHY_EVERY_S; '' when
        it cannot be had."""
        at, phrase = self._why
        if self._probe is None or time.monotonic() - at < _WHY_EVERY_S:
            return phrase
        phrase = ""
        try:
            call = HealthStub(self._probe).Check(HealthCheckRequest(service=SERVICE), timeout=_WHY_TIMEOUT_S,
                                                 metadata=self._metadata)
            await call
            trailing = await call.trailing_metadata()
            value = dict(trailing or ()).get(HEALTH_REASON_KEY, b"")
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            phrase = text if len(text) <= 40 and text.isprintable() else ""
        except grpc.aio.AioRpcError:
            phrase = ""  # the gateway is unreachable or refuses: the generic hint says enough
        self._why = (time.monotonic(), phrase)
        return phrase

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)
        if self._probe is not None:
            await self._probe.close(grace)
