"""Config of a gateway in front of several Ollama servers: ``ollama.servers`` and ``pool:``.

    ollama:
      model: llava:7b
      servers:                          # instead of ollama.host
        - http://gpu1:11434             # a URL alone: named gpu1:11434, weight 1
        - {url: http://gpu2:11434, name: big, weight: 2}
    pool:
      failure_threshold: 3
      open_s: 10

The calls are spread by :mod:`agent.gateway.pool` (least outstanding requests per
weight, per-server health and circuit breaker, one retry elsewhere). Every URL is
checked as ``ollama.host`` is (scheme, host, an explicit port); a URL or a name
given twice is refused, naming both entries.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

from pydantic import Field, field_validator

from agent.config.base import Strict
from agent.config.urls import split_url

__all__ = ["OllamaServerConfig", "PoolConfig", "as_server", "check_ollama_url", "server_key", "unique_servers"]


def check_ollama_url(v: str) -> str:
    """``v`` without a trailing slash when it is an Ollama base URL http(s)://HOST:PORT; ValueError saying
    what is wrong otherwise."""
    parsed = split_url(v.strip(), ("http", "https"), "an Ollama URL",
                       "http://HOST:PORT, e.g. http://127.0.0.1:11434")
    if parsed.port is None:
        raise ValueError(f"{v!r} has no port; the ollama client would use "
                         f"{443 if parsed.scheme == 'https' else 80}, write {parsed.scheme}://{parsed.hostname}"
                         ":11434 for Ollama's default")
    return v.strip().rstrip("/")


def server_key(url: str) -> str:
    """What makes two URLs the same server: scheme, lower-case host, port and path."""
    parsed = urllib.parse.urlsplit(url)
    return f"{parsed.scheme}://{(parsed.hostname or '').lower()}:{parsed.port}{parsed.path.rstrip('/')}"


class OllamaServerConfig(Strict):
    """One Ollama server of the pool."""

    url: str = Field(description="its base URL, http(s)://HOST:PORT")
    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
                             description="its name in metrics, logs and /healthz; default HOST:PORT of the URL")
    weight: Annotated[float, Field(gt=0, le=100)] = Field(
        default=1.0, description="its share of the calls relative to the others at equal load: a server "
        "with weight 2 is given calls until it has twice the outstanding calls of a weight-1 one (set it to "
        "its OLLAMA_NUM_PARALLEL, or its GPU's relative speed)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_ollama_url(v)

    @property
    def label(self) -> str:
        """``name``, else HOST:PORT of the URL."""
        if self.name is not None:
            return self.name
        parsed = urllib.parse.urlsplit(self.url)
        return f"{parsed.hostname}:{parsed.port}"


def as_server(item: Any) -> Any:
    """A bare URL string of ``ollama.servers`` as ``{"url": ...}``; anything else unchanged."""
    return {"url": item} if isinstance(item, str) else item


def unique_servers(servers: list[OllamaServerConfig]) -> list[OllamaServerConfig]:
    """``servers`` when no URL and no name repeats; ValueError naming both entries otherwise."""
    urls: dict[str, int] = {}
    names: dict[str, int] = {}
    for i, server in enumerate(servers):
        key = server_key(server.url)
        if key in urls:
            raise ValueError(f"servers[{i}] ({server.url}) is the same server as servers[{urls[key]}]; "
                             "expected each Ollama server once (raise its weight to give it more calls)")
        if server.label in names:
            raise ValueError(f"servers[{i}] is named {server.label!r} like servers[{names[server.label]}]; "
                             "expected a different name for each server")
        urls[key], names[server.label] = i, i
    return servers


class PoolConfig(Strict):
    """How a gateway with several ``ollama.servers`` treats a failing one: a circuit breaker per server."""

    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=3, description="failed calls in a row (unreachable, broken connection, HTTP 5xx, model missing) "
        "that open a server's breaker: no call goes to it for open_s, then one probe call")
    open_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=10.0, description="seconds a server's breaker stays open before one probe call is let through")
