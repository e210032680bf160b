"""Typed configuration of the escalation gateway (``edge-agent gateway``).

Loaded like the agent's config (:func:`agent.config.loader.load_model`): a YAML
file, then ``EDGE_GATEWAY_<KEY>[__<KEY>...]`` environment overrides (for example
``EDGE_GATEWAY_OLLAMA__MODEL=edge-inspector``), every problem reported with its
line or variable. With no file the defaults run a gateway on 127.0.0.1:50061 in
front of an Ollama on 127.0.0.1:11434 serving ``llava:7b``. Relative TLS, token
and taxonomy file paths in the file are relative to the file's folder.

A listen address other than loopback (or a unix socket) needs authentication:
``auth.tokens_file`` (bearer tokens) or ``tls.client_ca_file`` (mutual TLS), or
``insecure: true`` to say in writing that anyone who reaches the port may use it.
"""

from __future__ import annotations

import ipaddress
import pathlib
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from agent.config.base import Strict
from agent.config.loader import load_model
from agent.config.models import LoggingConfig, MetricsConfig
from agent.gateway.poolconfig import OllamaServerConfig, PoolConfig, as_server, check_ollama_url, unique_servers

__all__ = [
    "DEFAULT_DEFECT_CLASSES",
    "ENV_PREFIX",
    "GatewayAuthConfig",
    "GatewayConfig",
    "GatewayMetricsConfig",
    "gateway_plaintext_channels",
    "GatewayTlsConfig",
    "LimitsConfig",
    "OllamaConfig",
    "is_loopback",
    "is_model_name",
    "load_gateway_config",
]

ENV_PREFIX = "EDGE_GATEWAY_"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9465"  # the agent's is 9464: both can run on one host
DEFAULT_DEFECT_CLASSES = ("scratch", "hole", "stain", "missing")
"""The shipped detector's classes (``agent.capture.synthetic.DEFECT_CLASSES``)."""

_FILE_FIELDS = (("tls", "cert_file"), ("tls", "key_file"), ("tls", "client_ca_file"), ("auth", "tokens_file"),
                ("taxonomy",))
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
# Go's time.ParseDuration units, as Ollama parses keep_alive: "30m", "1h30m", "-1s", "0"
_GO_DURATION = re.compile(r"^-?(?:0|(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+)$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,199}$")
MiB = 1024 * 1024


class OllamaConfig(Strict):
    """The Ollama server the gateway asks, and how it asks."""

    host: str = Field(default="http://127.0.0.1:11434",
                      description="Ollama's base URL, http(s)://HOST:PORT (give the port: without one the "
                      "ollama client uses 80 or 443, not 11434)")
    servers: list[OllamaServerConfig] = Field(
        default_factory=list, description="several Ollama servers instead of host: each a URL or {url, name, "
        "weight}; the gateway spreads its calls over them (agent.gateway.pool); see docs/fleet.md")
    model: str = Field(default="llava:7b", description="a vision model pulled in Ollama (`ollama pull llava:7b`), "
                       "or the inspection variant built from models/Modelfile (`edge-inspector`)")
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=120.0, description="longest one Ollama call may take (the ollama client has no timeout of its "
        "own); a shorter deadline of the caller wins")
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=3.0, description="longest wait for a TCP connection to Ollama")
    keep_alive: str | int = Field(
        default="30m", description="how long Ollama keeps the model loaded after a call: a Go duration "
        "('30m', '24h'), seconds, or a negative value for ever")
    num_ctx: Annotated[int, Field(ge=1024, le=262_144)] | None = Field(
        default=None, description="context length sent with every call; unset: the model's own (its Modelfile's "
        "PARAMETER num_ctx, read from /api/show, else 4096); either way capped at the model's trained length")
    image_tokens: Annotated[int, Field(ge=1, le=16_384)] = Field(
        default=768, description="context tokens one image costs: 768 is Ollama's own count (server/prompt.go); "
        "LLaVA 1.5 uses 576, LLaVA 1.6's multi-patch images up to 2880")
    load_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=300.0, description="longest wait for Ollama to load the model (OLLAMA_LOAD_TIMEOUT is 5m); "
        "the gateway loads it at start and after Ollama restarts, apart from any call's deadline")
    num_predict: Annotated[int, Field(ge=32, le=8192)] = Field(
        default=512, description="most tokens in one answer")
    temperature: Annotated[float, Field(ge=0.0, le=0.2)] = Field(
        default=0.1, description="sampling temperature; at most 0.2 for repeatable answers")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_ollama_url(v)

    @field_validator("servers", mode="before")
    @classmethod
    def _server_strings(cls, v: Any) -> Any:
        return [as_server(item) for item in v] if isinstance(v, list) else v

    @field_validator("servers")
    @classmethod
    def _servers(cls, v: list[OllamaServerConfig]) -> list[OllamaServerConfig]:
        return unique_servers(v)

    @model_validator(mode="after")
    def _host_or_servers(self) -> OllamaConfig:
        if self.servers and "host" in self.model_fields_set:
            raise ValueError("both host and servers are set; give one Ollama server as host, or several as "
                             "servers (then leave host out)")
        return self

    def server_list(self) -> list[OllamaServerConfig]:
        """``servers``, else ``host`` as the one server."""
        return list(self.servers) or [OllamaServerConfig(url=self.host)]

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if not _MODEL_NAME.match(v):
            raise ValueError(f"{v!r} is not an Ollama model name; expected NAME[:TAG], e.g. llava:7b")
        return v

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, v: str | int) -> str | int:
        if isinstance(v, str) and not _GO_DURATION.match(v.strip()):
            raise ValueError(f"{v!r} is not a duration; expected e.g. '30m', '24h', '90s', a number of "
                             "seconds, or -1 to keep the model loaded for ever")
        return v.strip() if isinstance(v, str) else v


class LimitsConfig(Strict):
    """What one gateway accepts: concurrency, queue, image sizes."""

    parallel: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1, description="VLM calls at once; set it to Ollama's OLLAMA_NUM_PARALLEL (default 1)")
    queue: Annotated[int, Field(ge=0, le=10_000)] = Field(
        default=8, description="calls waiting for a free slot; one more is refused with RESOURCE_EXHAUSTED")
    max_image_bytes: Annotated[int, Field(ge=1024, le=256 * MiB)] = Field(
        default=2 * MiB, description="largest encoded image (frame or crop); larger is INVALID_ARGUMENT (the "
        "agent's 672 px JPEGs are about 60 kB; raise it with escalation.image_max_side)")
    max_image_pixels: Annotated[int, Field(ge=64 * 64, le=100_000_000)] = Field(
        default=4096 * 4096, description="largest width*height, read from the image header before decoding")
    max_crops: Annotated[int, Field(ge=0, le=16)] = Field(default=4, description="most crops per request")
    max_message_bytes: Annotated[int, Field(ge=64 * 1024, le=1024 * MiB)] = Field(
        default=6 * MiB, description="gRPC receive limit for one request; a larger request is refused by gRPC "
        "itself (RESOURCE_EXHAUSTED 'Received message larger than max'); keep it above max_image_bytes so "
        "that an oversized image gets the gateway's INVALID_ARGUMENT message. At most 2 * parallel requests "
        "are read at once (the others wait unread), so this times 2 * parallel bounds the memory they take. "
        "Requests are parsed on the event loop after their fields are counted against max_detections and "
        "max_crops, and sent on to Ollama in pieces (scripts/bench_loop_occupancy.py: about 2 ms of the "
        "loop's CPU in its longest callback for a 6 MiB request)")
    max_detections: Annotated[int, Field(ge=0, le=10_000)] = Field(
        default=100, description="most detections per request, counted before any is read")
    max_jpeg_scans: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=32, description="most scans in one JPEG, counted before decoding (a baseline JPEG has 1, a "
        "progressive one about 10; each scan of a large progressive JPEG costs a full pass over the image)")
    per_client: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=4, description="most calls (running and waiting) of one authenticated client at once, so that "
        "one client cannot take every slot; without authentication all callers are one client and this "
        "does not apply")
    decode_workers: Annotated[int, Field(ge=1, le=64)] = Field(
        default=1, description="threads that decode images to prove them sound; calls wait for a free one (a "
        "672 px JPEG takes about 1 ms; more threads take more cores from the event loop)")
    max_streams_per_connection: Annotated[int, Field(ge=4, le=10_000)] = Field(
        default=512, description="HTTP/2 streams (calls, health watches) one connection may have open; keep it "
        "above the agents' escalation.max_in_flight + 1: a client that opens more at once (before it has read "
        "the limit) gets UNAVAILABLE for the extra ones")
    max_connection_idle_s: Annotated[float, Field(ge=1, le=86_400)] = Field(
        default=300.0, description="a connection without calls for this long is closed (GOAWAY); an agent's "
        "channel, which keeps a health watch open, is never idle")
    max_connection_age_s: Annotated[float, Field(ge=0, le=7 * 86_400)] = Field(
        default=3600.0, description="a connection older than this is asked to reconnect (GOAWAY; its calls get "
        "30 s to finish), so that clients spread over gateways again; 0: no limit")
    handshake_timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        default=10.0, description="a new connection that has not finished its TLS/HTTP/2 handshake in this "
        "long is closed (idle sockets cannot pile up)")

    @model_validator(mode="after")
    def _message_fits_an_image(self) -> LimitsConfig:
        if self.max_message_bytes < self.max_image_bytes + 64 * 1024:
            raise ValueError(f"max_message_bytes ({self.max_message_bytes}) must be at least max_image_bytes "
                             f"({self.max_image_bytes}) + 65536, room for one image and the request's other "
                             "fields")
        return self


class GatewayTlsConfig(Strict):
    """TLS for the gRPC port; with ``client_ca_file``, mutual TLS."""

    cert_file: pathlib.Path = Field(description="the gateway's certificate chain (PEM)")
    key_file: pathlib.Path = Field(description="the gateway's private key (PEM)")
    client_ca_file: pathlib.Path | None = Field(
        default=None, description="CA (PEM) that signs the agents' certificates; set it to require one from "
        "every client (mutual TLS)")


class GatewayAuthConfig(Strict):
    """Who may call ``Describe``: bearer tokens from a file (mutual TLS is ``tls.client_ca_file``)."""

    tokens_file: pathlib.Path | None = Field(
        default=None, description="one client a line, NAME:TOKEN (NAME: letters, digits, . _ -; TOKEN: at least "
        "24 characters, e.g. from `openssl rand -base64 32`); '#' starts a comment. The agent sends its "
        "token from escalation.token_file. The file must not be readable by others (chmod 600); under "
        "systemd use LoadCredential=")


class GatewayMetricsConfig(MetricsConfig):
    """Prometheus ``/metrics`` and ``/healthz`` of the gateway; port 9465 (the agent's is 9464)."""

    listen: str = Field(default=DEFAULT_METRICS_LISTEN, description="HOST:PORT ([::1]:PORT for IPv6; port 0 "
                        "picks a free one)")


class UnixSocketConfig(Strict):
    """Who may connect to a ``unix:`` listen address. Set explicitly because the shipped units run the agent and
    the gateway as different transient users with ``UMask=0077``, which leaves a socket ``srwx------``."""

    group: str | None = Field(
        default=None, description="group (name or number) that owns the socket; its members may connect (mode "
        "0660). The gateway's user must be in it (SupplementaryGroups= in both units). None: every local user "
        "may connect (mode 0666), as to a loopback TCP port")
    mode: str | None = Field(default=None, description="octal mode of the socket, e.g. '0660'; default 0660 "
                             "with a group, 0666 without")

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str | None) -> str | None:
        if v is not None and (not re.fullmatch(r"0?[0-7]{3}", v) or int(v, 8) & 0o111):
            raise ValueError(f"{v!r} is not a socket mode; expected octal read/write bits such as '0660' or '0666'")
        return v

    def octal_mode(self) -> int:
        """The mode to set: ``mode``, else 0660 with a group and 0666 without."""
        return int(self.mode, 8) if self.mode is not None else (0o660 if self.group is not None else 0o666)


class GatewayConfig(Strict):
    listen: str = Field(default="127.0.0.1:50061",
                        description="HOST:PORT ([::1]:PORT for IPv6; port 0 picks a free one) or unix:/path/to.sock")
    ollama: OllamaConfig = Field(default_factory=OllamaConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    tls: GatewayTlsConfig | None = None
    socket: UnixSocketConfig = Field(default_factory=UnixSocketConfig,
                                     description="owner group and mode of a unix:/path listen socket")
    auth: GatewayAuthConfig = Field(default_factory=GatewayAuthConfig)
    insecure: bool = Field(
        default=False, description="allow a listen address other than loopback without authentication "
        "(anyone who reaches the port can use the VLM); leave it false and set auth.tokens_file or "
        "tls.client_ca_file")
    reflection: bool = Field(
        default=False, description="serve gRPC server reflection (for grpcurl and similar tools)")
    defect_classes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DEFECT_CLASSES), min_length=1,
        description="the defect kinds the question names (the prefilter's classes) when there is no taxonomy")
    taxonomy: pathlib.Path | None = Field(
        default=None, description="the plant's taxonomy file (the agents' own; relative to this file): the "
        "question names its line, its labels with their descriptions and what a good part looks like, and "
        "the answer's defect types are its labels (agent.gateway.question); None: parts on a conveyor "
        "belt and defect_classes")
    health_interval_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=5.0, description="how often the health service asks Ollama whether the model is there")
    summary_interval_s: Annotated[float, Field(ge=0)] = Field(
        default=60.0, description="seconds between the info-level summary log lines; 0 turns them off")
    shutdown_grace_s: Annotated[float, Field(ge=0, le=300)] = Field(
        default=5.0, description="on SIGTERM, how long calls in progress may finish")
    pool: PoolConfig = Field(default_factory=PoolConfig, description="per-server circuit breaker when "
                             "ollama.servers names several servers")
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: GatewayMetricsConfig = Field(default_factory=lambda: GatewayMetricsConfig())

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if v.startswith("unix:"):
            if not v[len("unix:"):].lstrip("/"):
                raise ValueError(f"{v!r} names no socket path; expected unix:/run/edge-agent/gateway.sock")
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{v!r} is not a listen address; expected HOST:PORT (e.g. 127.0.0.1:50061), "
                             "[::1]:PORT or unix:/path/to.sock")
        if host.startswith("["):
            try:
                ipaddress.IPv6Address(host.strip("[]"))
            except ValueError:
                raise ValueError(f"{v!r}: {host} is not an IPv6 address") from None
        return v

    @model_validator(mode="after")
    def _exposed_needs_auth(self) -> GatewayConfig:
        if self.authenticated or self.insecure or is_loopback(self.listen):
            return self
        raise ValueError(f"listen {self.listen!r} is reachable from other hosts, but no client has to "
                         "authenticate; set auth.tokens_file (bearer tokens) or tls.client_ca_file (mutual TLS), "
                         "listen on 127.0.0.1 or a unix: socket, or set insecure: true to accept anonymous calls")

    @property
    def authenticated(self) -> bool:
        """True when every Describe call must carry a token or a client certificate."""
        return self.auth.tokens_file is not None or (self.tls is not None and self.tls.client_ca_file is not None)

    @field_validator("defect_classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        for name in v:
            if not name.strip() or len(name) > 64:
                raise ValueError(f"defect class {name!r} must be 1-64 characters, not blank")
        return v


def is_model_name(name: str) -> bool:
    """True for what Ollama takes as a model name: NAME[:TAG] (``llava:7b``, ``library/llava:latest``)."""
    return bool(_MODEL_NAME.match(name))


def is_loopback(listen: str) -> bool:
    """True for a unix socket or a HOST:PORT whose host is a loopback address or name."""
    if listen.startswith("unix:"):
        return True
    host = listen.rpartition(":")[0].strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def load_gateway_config(path: pathlib.Path | str | None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """The gateway's config from ``path`` (None: defaults) and ``EDGE_GATEWAY_*`` variables of ``env``
    (default ``os.environ``). Raises ConfigError listing every problem with its line or variable."""
    return load_model(GatewayConfig, path, env, env_prefix=ENV_PREFIX, file_fields=_FILE_FIELDS)


def gateway_plaintext_channels(config: GatewayConfig) -> list[str]:
    """One warning per plain-text channel of the gateway's config (empty: none)."""
    if config.tls is not None or is_loopback(config.listen):
        return []
    return [f"listen {config.listen} is plain text on an address other hosts reach: frames, answers and any "
            "credentials cross the network in the clear; set tls: (cert_file, key_file, and client_ca_file "
            "for mutual TLS) or listen on 127.0.0.1 or a unix socket"]
