"""The ``opcua_server:`` section of the agent's config: the agent's own OPC UA server (docs/opcua.md), which
serves every camera's last verdict, counters and health to SCADA, MES and UaExpert.

Off by default. On loopback (127.0.0.1, ::1, ``localhost``) it may run without security: only programs on the box
reach it. A host other than loopback needs both a user list (``users_file``: anonymous clients refused) and only
signed policies (no ``None`` among ``security.policies``), or ``insecure: true`` to say in writing that anyone
who reaches the port may read the address space (it is read-only either way).
"""

from __future__ import annotations

import ipaddress
import pathlib
import socket
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import Strict

__all__ = ["OpcUaSecurityConfig", "OpcUaServerConfig", "SecurityPolicyName", "is_loopback_bind"]

SecurityPolicyName = Literal["None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"]
"""The security policies the server may offer (OPC UA's names: no security, signed, signed and encrypted)."""


def is_loopback_bind(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; False for the wildcards (0.0.0.0, ::) and any other name."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _only_none() -> list[SecurityPolicyName]:
    return ["None"]


class OpcUaSecurityConfig(Strict):
    """What the server offers: ``None`` (no security) and/or Basic256Sha256 with signing or signing and encryption.
    A signed policy needs the server's certificate and private key (PEM or DER)."""

    policies: list[SecurityPolicyName] = Field(
        default_factory=_only_none, min_length=1,
        description="offered security policies: None, Basic256Sha256_Sign, Basic256Sha256_SignAndEncrypt")
    cert_file: pathlib.Path | None = Field(default=None, description="the server's certificate (PEM or DER)")
    key_file: pathlib.Path | None = Field(default=None, description="the server's private key (PEM, unencrypted)")

    @model_validator(mode="after")
    def _signed_needs_a_certificate(self) -> OpcUaSecurityConfig:
        signed = [p for p in self.policies if p != "None"]
        if signed and (self.cert_file is None or self.key_file is None):
            raise ValueError(f"policies {', '.join(signed)} sign the messages and need the server's certificate: "
                             "set cert_file and key_file (e.g. made with `openssl req -x509 -newkey rsa:2048 ...`, "
                             "see docs/opcua.md), or offer only None on loopback")
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"policies {self.policies} names a policy twice; expected each at most once")
        return self

    @property
    def signed_only(self) -> bool:
        """True when no client can connect without signing its messages."""
        return "None" not in self.policies


class OpcUaServerConfig(Strict):
    """The agent's OPC UA server. Endpoint: ``opc.tcp://HOST:PORT/edge-agent/`` (``endpoint_host`` in place of
    ``host`` when clients must dial another name, e.g. behind NAT or for a wildcard bind)."""

    enabled: bool = False
    host: str = Field(default="127.0.0.1", min_length=1,
                      description="address to bind: 127.0.0.1 (this box only), 0.0.0.0 (every interface), ...")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(default=4840, description="TCP port (4840: OPC UA's own)")
    endpoint_host: str | None = Field(
        default=None, description="host name clients dial, in the endpoint URL; default: host (the box's name "
        "for a wildcard bind)")
    namespace_uri: str = Field(default="urn:edge-agent", min_length=1,
                               description="the namespace of every node the agent serves (nsu= in NodeIds)")
    security: OpcUaSecurityConfig = Field(default_factory=OpcUaSecurityConfig)
    users_file: pathlib.Path | None = Field(
        default=None, description="USER:PASSWORD lines (chmod 600); set, only these users may connect; unset, "
        "anonymous clients may")
    insecure: bool = Field(
        default=False, description="allow a host other than loopback without users_file and signed-only "
        "policies (anyone who reaches the port may read the address space)")
    refresh_s: Annotated[float, Field(gt=0.0, le=60.0)] = Field(
        default=1.0, description="seconds between refreshes of the health and device nodes (and of the "
        "cameras, after a reload)")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if any(c in v for c in "/:?#@ ") and not _is_ipv6(v):
            raise ValueError(f"{v!r} is not a host; expected an address or name such as 127.0.0.1, 0.0.0.0 or ::1")
        return v

    @model_validator(mode="after")
    def _exposed_needs_security(self) -> OpcUaServerConfig:
        if not self.enabled or self.insecure or is_loopback_bind(self.host):
            return self
        missing = [what for what, ok in (("users_file (anonymous clients refused)", self.users_file is not None),
                                         ("security.policies without None (signed only)",
                                          self.security.signed_only)) if not ok]
        if missing:
            raise ValueError(f"host {self.host!r} is reachable from other hosts, but the server lacks "
                             f"{' and '.join(missing)}; set them, bind 127.0.0.1, or set insecure: true to let "
                             "anyone who reaches the port read it")
        return self

    @property
    def endpoint(self) -> str:
        """The endpoint URL the server announces and clients dial."""
        host = self.endpoint_host or self.host
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()  # the box's name: what a client on the line can dial
        if _is_ipv6(host):
            host = f"[{host.strip('[]')}]"
        return f"opc.tcp://{host}:{self.port}/edge-agent/"


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host.strip("[]")), ipaddress.IPv6Address)
    except ValueError:
        return False
