"""The ``escalation:`` section of the agent's config: the gateway to ask (:func:`grpc_target`), TLS, the
per-camera rate limit, the near-duplicate cache and the circuit breaker."""

from __future__ import annotations

import ipaddress
import pathlib
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from agent.config.base import Strict

_SCHEMES = ("unix", "unix-abstract", "dns", "ipv4", "ipv6")
"""gRPC resolver prefixes an escalation.gateway value may start with."""

__all__ = ["BreakerConfig", "DedupeConfig", "EscalationConfig", "EscalationTlsConfig", "RateLimitConfig",
           "grpc_target"]


class RateLimitConfig(Strict):
    """Escalations allowed per camera: a token bucket refilled at ``per_minute``, holding at most
    ``burst``. A frame that finds the bucket empty is published at once with status ``rate_limited``."""

    per_minute: Annotated[float, Field(ge=0.0, le=60_000.0)] = Field(
        default=30.0, description="average escalations per minute; 0 never escalates this camera")
    burst: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=5, description="escalations allowed back to back after a quiet spell")


class BreakerConfig(Strict):
    """The escalation client's circuit breaker: after ``failure_threshold`` failed calls in a row
    (gateway unreachable, deadline passed, VLM down or busy) it opens and uncertain frames are published
    at once with status ``unavailable``; after ``open_s`` one probe call is let through, and its success
    closes the breaker again."""

    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    open_s: Annotated[float, Field(gt=0.0, le=3600.0)] = Field(
        default=10.0, description="seconds the breaker stays open before it lets one probe call through")


class DedupeConfig(Strict):
    """The near-duplicate cache: a frame whose perceptual hash (64-bit pHash of the grey frame) is within
    ``max_distance`` bits of an earlier escalated frame of the same camera, with the same uncertain labels
    at overlapping places, reuses that frame's answer (status ``cached``) instead of asking again."""

    enabled: bool = True
    max_distance: Annotated[int, Field(ge=0, le=32)] = Field(
        default=6, description="most differing hash bits (of 63) for a near-duplicate; camera noise flips 0-2")
    min_iou: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.5, description="least overlap (IoU) of each uncertain detection's box with its counterpart")
    ttl_s: Annotated[float, Field(gt=0.0, le=86_400.0)] = Field(
        default=60.0, description="seconds an answer is reused; after that the scene is asked about again")
    max_entries: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=256, description="answers kept over all cameras; the oldest is dropped first")


class EscalationTlsConfig(Strict):
    """TLS to the gateway; with ``cert_file`` and ``key_file``, mutual TLS."""

    ca_file: pathlib.Path | None = Field(default=None, description="CA that signed the gateway's "
                                         "certificate; default: the system's CAs")
    cert_file: pathlib.Path | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: pathlib.Path | None = Field(default=None, description="client key (mutual TLS)")
    server_name: str | None = Field(default=None, description="name to expect in the gateway's certificate "
                                    "when it differs from the host dialled (e.g. dialling an IP address)")

    @model_validator(mode="after")
    def _pair(self) -> EscalationTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        return self


class EscalationConfig(Strict):
    """Escalation of uncertain frames to the gateway (``edge-agent gateway``) over gRPC."""

    gateway: str | None = Field(
        default=None, description="HOST:PORT, a list (YAML, or a comma list) of IP:PORT (client-side "
        "round_robin with health checking), dns:///NAME:PORT (every address of the name, round_robin) or "
        "unix:/PATH; None: escalation off, uncertain frames are published with status unavailable")
    template_id: str = Field(default="inspect-v1", min_length=1, max_length=64,
                             description="question template the gateway asks the VLM")
    publish_deadline_s: Annotated[float, Field(gt=0.0, le=300.0)] = Field(
        default=2.0, description="longest an uncertain frame's event waits for the VLM; then it is published "
        "with status timeout and the prefilter's verdict (a later answer is published as revision 2)")
    call_deadline_s: Annotated[float, Field(gt=0.0, le=600.0)] = Field(
        default=15.0, description="gRPC deadline of one escalation, counted from the frame's inspection "
        "(queueing included); at least publish_deadline_s")
    max_in_flight: Annotated[int, Field(ge=1, le=256)] = Field(default=4, description="calls at a time")
    queue_size: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=16, description="frames waiting for a call slot; when full, a new uncertain frame is published "
        "at once with status rate_limited")
    rate_per_camera: RateLimitConfig = Field(default_factory=RateLimitConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)
    image_max_side: Annotated[int, Field(ge=64, le=4096)] = Field(
        default=672, description="the frame is sent as a JPEG downscaled to this longest side (LLaVA sees 336)")
    jpeg_quality: Annotated[int, Field(ge=30, le=100)] = 85
    crop_margin: Annotated[float, Field(ge=0.0, le=4.0)] = Field(
        default=0.5, description="context around each uncertain detection's crop, as a share of the box's size")
    max_crops: Annotated[int, Field(ge=0, le=16)] = Field(
        default=4, description="close-ups of the most confident uncertain detections sent with the frame "
        "(the gateway's limits.max_crops must allow as many)")
    health_check: bool = Field(
        default=True, description="client-side health checking: calls go only to gateways whose health "
        "service says SERVING (a gateway whose Ollama is down is skipped, or fails fast)")
    keepalive_s: Annotated[float, Field(ge=10.0, le=3600.0)] = Field(
        default=30.0, description="HTTP/2 ping interval on the channel, also while idle (the gateway allows "
        "one every 10 s)")
    tls: EscalationTlsConfig | None = None
    token_file: pathlib.Path | None = Field(
        default=None, description="file holding this agent's bearer token for a gateway with auth.tokens_file "
        "(the TOKEN of its NAME:TOKEN line; chmod 600, or systemd's LoadCredential=)")

    @field_validator("gateway", mode="before")
    @classmethod
    def _gateway_list(cls, v: Any) -> Any:
        """A YAML list of gateways as the comma list gRPC balances over, each entry checked on its own."""
        if not isinstance(v, list):
            return v
        if not v:
            raise ValueError("the gateway list is empty; expected at least one IP:PORT")
        for i, item in enumerate(v):
            if not isinstance(item, str) or "," in item:
                raise ValueError(f"gateway[{i}] is {item!r}; expected one IP:PORT per item")
            _ip_port(item.strip(), f"gateway[{i}] {item.strip()!r}", "a gateway list")
        return ",".join(item.strip() for item in v)

    @field_validator("gateway")
    @classmethod
    def _gateway(cls, v: str | None) -> str | None:
        if v is not None:
            grpc_target(v)  # raises ValueError with the reason
        return v

    @model_validator(mode="after")
    def _deadlines(self) -> EscalationConfig:
        if self.call_deadline_s < self.publish_deadline_s:
            raise ValueError(f"call_deadline_s ({self.call_deadline_s}) must not be below publish_deadline_s "
                             f"({self.publish_deadline_s}): an answer could never arrive in time")
        return self

    @property
    def target(self) -> str | None:
        """The gRPC target the channel dials (see :func:`grpc_target`); None when escalation is off."""
        return None if self.gateway is None else grpc_target(self.gateway)


def grpc_target(value: str) -> str:
    """The gRPC channel target for an ``escalation.gateway`` value; ValueError saying what is wrong.

    ``HOST:PORT`` and the resolver forms ``dns:``, ``ipv4:``, ``ipv6:``, ``unix:``,
    ``unix-abstract:`` pass unchanged; a comma list of ``IP:PORT`` becomes ``ipv4:A,B``
    (or ``ipv6:[A]:P,[B]:P``), the form gRPC balances over with round_robin.
    """
    value = value.strip()
    if not value:
        raise ValueError("the gateway address is empty; expected HOST:PORT or unix:/PATH")
    scheme = value.split(":", 1)[0]
    if scheme in _SCHEMES:
        if not value.split(":", 1)[1].strip("/"):
            raise ValueError(f"{value!r} names no address after {scheme}:")
        return value
    if "," in value:
        families = {_ip_port(item.strip(), f"{item.strip()!r} in {value!r}") for item in value.split(",")}
        if len(families) > 1:
            raise ValueError(f"{value!r} mixes IPv4 and IPv6 addresses; gRPC takes one family per list")
        return f"ipv{families.pop()}:" + ",".join(item.strip() for item in value.split(","))
    _host_port(value, value)
    return value


def _ip_port(item: str, where: str, kind: str = "a comma list") -> int:
    """The IP version of a list item IP:PORT; ValueError starting with ``where`` when it is not one."""
    scheme = item.split(":", 1)[0]
    if scheme in _SCHEMES:
        raise ValueError(f"{where}: {kind} takes IP:PORT items only; give a {scheme}: target alone, not in a list")
    host, _ = _host_port(item, item, where)
    try:
        return ipaddress.ip_address(host.strip("[]")).version
    except ValueError:
        raise ValueError(f"{where}: {kind} takes IP:PORT items only; for host names use dns:///NAME:PORT (a "
                         "name with several addresses)") from None


def _host_port(item: str, whole: str, where: str | None = None) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    where = where or (repr(item) if item == whole else f"{item!r} in {whole!r}")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{where} is not HOST:PORT (a port from 1 to 65535 is required)")
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        raise ValueError(f"{item!r}: write an IPv6 address in brackets, e.g. [::1]:50061")
    return host, int(port)
