"""URL checks shared by the config sections that name a server (the broker, an Ollama server): pure."""

from __future__ import annotations

import urllib.parse

__all__ = ["check_broker_url", "split_url"]


def split_url(v: str, schemes: tuple[str, ...], what: str, expected: str) -> urllib.parse.SplitResult:
    """``v`` split, when its scheme is one of ``schemes`` and it names a host with a valid (or no) port;
    ValueError naming ``what`` it should be and the ``expected`` form otherwise."""
    parsed = urllib.parse.urlsplit(v)
    if parsed.scheme not in schemes or not parsed.hostname:
        raise ValueError(f"{v!r} is not {what}; expected {expected}")
    try:
        _ = parsed.port
    except ValueError as exc:
        raise ValueError(f"{v!r} has an invalid port: {exc}") from None
    return parsed


def check_broker_url(v: str) -> str:
    """``v`` when it is an MQTT broker URL (mqtt:// or mqtts://, a host, a valid port if any)."""
    split_url(v, ("mqtt", "mqtts"), "a broker URL", "mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    return v
