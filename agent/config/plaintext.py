"""Plain-text channels in a config: what crosses the network unencrypted, said once at start and by doctor.

* the agent's broker: ``mqtt://`` (not ``mqtts://``) with a username and password to a broker that is not on
  this host: the password goes over the wire in the clear with every CONNECT;
* the agent's gateway: ``escalation.gateway`` off this host without ``escalation.tls``: frames, crops and the
  VLM's answers cross the network in the clear.

The gateway's own port (``listen`` reachable from other hosts without ``tls``) is checked by
:func:`agent.gateway.config.gateway_plaintext_channels`.

Loopback addresses (127.0.0.0/8, ::1, ``localhost``) and unix sockets stay on the host and are fine. The checks
read the config only (no I/O, no DNS): a host name other than ``localhost`` counts as off the host.
"""

from __future__ import annotations

import ipaddress
import urllib.parse

from agent.config.models import AgentConfig
from agent.redact import redact

__all__ = ["agent_plaintext_channels", "is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``[::1]`` too); False for any other host, for the
    wildcard addresses (0.0.0.0, ::) and for names, which may resolve anywhere."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _gateway_hosts(target: str) -> list[str]:
    """The hosts an ``escalation.gateway`` value dials; [] for a unix socket."""
    scheme, _, rest = target.partition(":")
    if scheme in ("unix", "unix-abstract"):
        return []
    if scheme in ("ipv4", "ipv6", "dns"):
        target = rest.lstrip("/")
        if scheme == "dns" and "/" in target:  # dns://AUTHORITY/NAME:PORT
            target = target.split("/", 1)[1]
    return [item.strip().rpartition(":")[0] or item.strip() for item in target.split(",") if item.strip()]


def agent_plaintext_channels(config: AgentConfig) -> list[str]:
    """One warning per plain-text channel of the agent's config (empty: none)."""
    warnings: list[str] = []
    mqtt = config.mqtt
    url = urllib.parse.urlsplit(mqtt.url)
    has_password = mqtt.password_file is not None or mqtt.password_credential is not None
    if url.scheme == "mqtt" and has_password and not is_loopback_host(url.hostname or ""):
        warnings.append(f"mqtt.url {redact(mqtt.url)} is plain text to a broker on another host: the MQTT "
                        "password crosses the network in the clear with every connection; use mqtts:// "
                        "(mqtt.tls) or a broker on this host")
    gateway = config.escalation.gateway
    if gateway is not None and config.escalation.tls is None:
        remote = [h for h in _gateway_hosts(gateway) if not is_loopback_host(h)]
        if remote:
            warnings.append(f"escalation.gateway {redact(gateway)} is plain text to another host: frames and the "
                            "VLM's answers cross the network in the clear; set escalation.tls (and tls: on the "
                            "gateway) or reach it through a loopback address or a unix socket")
    return warnings

