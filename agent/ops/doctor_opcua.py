"""``edge-agent doctor``'s ``opcua server`` row: the agent's OPC UA server (``opcua_server:``, docs/opcua.md).

It says the endpoint and its state: the users file and the certificate load; the port is free (the agent will
listen there) or a running agent's server answers there (its endpoints, asked over OPC UA's discovery, which needs
no user); another program on the port, or an address not of this host, is a failure.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from agent.config.models import AgentConfig
from agent.config.opcua_server import OpcUaServerConfig
from agent.errors import OpcUaServerError
from agent.ops.check import Check

__all__ = ["check_opcua_server"]

_NAME = "opcua server"


def check_opcua_server(config: AgentConfig, timeout_s: float) -> Check:
    cfg = config.opcua_server
    if not cfg.enabled:
        return Check(_NAME, "SKIP", "opcua_server.enabled is false: no OPC UA server")
    try:
        from asyncua.crypto import uacrypto

        from agent.outputs.opcua_server.users import UserTable
    except ImportError as exc:
        return Check(_NAME, "FAIL", f"opcua_server.enabled needs the asyncua package ({exc})",
                     "pip install 'edge-agent[plant]'")
    offered = f"{', '.join(cfg.security.policies)}; " + (
        f"users from {cfg.users_file}" if cfg.users_file is not None else "anonymous clients")
    try:
        users = UserTable.from_file(cfg.users_file) if cfg.users_file is not None else None
        if cfg.security.cert_file is not None and cfg.security.key_file is not None:
            asyncio.run(_load_keys(uacrypto, cfg))
    except OpcUaServerError as exc:
        return Check(_NAME, "FAIL", str(exc), "fix the file named")
    except (OSError, ValueError, TypeError) as exc:
        return Check(_NAME, "FAIL", f"opcua_server.security: the certificate or key does not load: {exc}",
                     "set cert_file to a DER or PEM certificate and key_file to its unencrypted PEM key")
    if users is not None:
        offered += f" ({len(users.names)})"
    return _check_port(cfg, offered, timeout_s)


async def _load_keys(uacrypto: object, cfg: OpcUaServerConfig) -> None:
    await uacrypto.load_certificate(cfg.security.cert_file)  # type: ignore[attr-defined]
    await uacrypto.load_private_key(cfg.security.key_file)  # type: ignore[attr-defined]


def _check_port(cfg: OpcUaServerConfig, offered: str, timeout_s: float) -> Check:
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((cfg.host.strip("[]"), cfg.port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return Check(_NAME, "FAIL", f"opcua_server.host {cfg.host}: not an address of this host",
                             "set opcua_server.host to one of its addresses, 0.0.0.0 or 127.0.0.1")
            if exc.errno != errno.EADDRINUSE:
                return Check(_NAME, "FAIL", f"{cfg.host}:{cfg.port}: cannot listen: {exc.strerror}",
                             "choose another opcua_server.port")
        else:
            return Check(_NAME, "OK", f"{cfg.endpoint}: port free (the agent listens there when it runs); {offered}")
    serving, answer = asyncio.run(_endpoints(cfg, timeout_s))
    if not serving:
        return Check(_NAME, "FAIL", f"{cfg.host}:{cfg.port} is in use, and not by an OPC UA server ({answer})",
                     "stop that program or set opcua_server.port to a free port")
    return Check(_NAME, "OK", f"{cfg.endpoint}: serving ({answer}); {offered}")


async def _endpoints(cfg: OpcUaServerConfig, timeout_s: float) -> tuple[bool, str]:
    """(True, what the OPC UA server on the port says of itself) or (False, why it said nothing)."""
    from asyncua.client.client import Client
    from asyncua.ua.uaerrors import UaError

    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    client = Client(f"opc.tcp://{host}:{cfg.port}/edge-agent/", timeout=timeout_s)
    try:
        endpoints = await asyncio.wait_for(client.connect_and_get_server_endpoints(), timeout_s)
    except (OSError, asyncio.TimeoutError, UaError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if not endpoints:
        return False, "it lists no endpoint"
    app = endpoints[0].Server
    modes = sorted({e.SecurityPolicyUri.rsplit("#", 1)[-1] + "/" + e.SecurityMode.name for e in endpoints})
    return True, f"{app.ApplicationName.Text}, {app.ApplicationUri}, endpoints {', '.join(modes)}"
