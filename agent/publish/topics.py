"""MQTT topic names. Pure functions, no I/O.

With the default prefix ``edge``::

    edge/<device>/<camera>/tags       one tag event per inspected frame (QoS 1)
    edge/<device>/<camera>/snapshot   JPEG of an inspected frame (optional)
    edge/<device>/status              retained online/offline with each camera's state; the last will says offline
    edge/<device>/stats               periodic counters

The prefix may hold several levels (``plant1/line3/edge``). Device and camera
ids are single topic levels: no ``/``, ``+``, ``#``, and not empty.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

DEFAULT_PREFIX = "edge"
_WILDCARDS = ("+", "#")


class TagsTopic(NamedTuple):
    prefix: str
    device: str
    camera: str


def _check_prefix(prefix: str) -> str:
    if not prefix or prefix.startswith("/") or prefix.endswith("/") or any(c in prefix for c in _WILDCARDS):
        raise ValueError(
            f"topic prefix {prefix!r} must be non-empty, without '+', '#' or a leading/trailing '/'"
        )
    return prefix


def _check_level(value: str, what: str, *, wildcard: bool = False) -> str:
    if wildcard and value in _WILDCARDS:
        return value
    if not value or "/" in value or any(c in value for c in _WILDCARDS) or "\0" in value:
        raise ValueError(f"{what} {value!r} is not a valid topic level (non-empty, no '/', '+', '#')")
    return value


@functools.lru_cache(maxsize=1024)
def tags_topic(prefix: str, device: str, camera: str) -> str:
    """``<prefix>/<device>/<camera>/tags``: where a camera's tag events go (checked once per camera: every tag
    event asks)."""
    return f"{_check_prefix(prefix)}/{_check_level(device, 'device')}/{_check_level(camera, 'camera')}/tags"


def snapshot_topic(prefix: str, device: str, camera: str) -> str:
    """``<prefix>/<device>/<camera>/snapshot``: JPEG snapshots of inspected frames."""
    return (
        f"{_check_prefix(prefix)}/{_check_level(device, 'device')}/{_check_level(camera, 'camera')}/snapshot"
    )


def status_topic(prefix: str, device: str) -> str:
    """``<prefix>/<device>/status``: retained online/offline state (and the last will)."""
    return f"{_check_prefix(prefix)}/{_check_level(device, 'device')}/status"


def stats_topic(prefix: str, device: str) -> str:
    """``<prefix>/<device>/stats``: periodic counters of the agent."""
    return f"{_check_prefix(prefix)}/{_check_level(device, 'device')}/stats"


def tags_filter(prefix: str = DEFAULT_PREFIX, device: str = "+", camera: str = "+") -> str:
    """A subscription filter for tag events; ``device`` and ``camera`` may be ``+`` (any)."""
    _check_level(device, "device", wildcard=True)
    if device == "#":
        raise ValueError("device may be '+' but not '#' in a tags filter")
    _check_level(camera, "camera", wildcard=True)
    if camera == "#":
        raise ValueError("camera may be '+' but not '#' in a tags filter")
    return f"{_check_prefix(prefix)}/{device}/{camera}/tags"


def parse_tags_topic(topic: str) -> TagsTopic:
    """Split ``<prefix>/<device>/<camera>/tags`` into its parts (the prefix may have levels).

    Raises ``ValueError`` when the topic is not a tags topic.
    """
    parts = topic.split("/")
    if len(parts) < 4 or parts[-1] != "tags":
        raise ValueError(f"{topic!r} is not a tags topic (<prefix>/<device>/<camera>/tags)")
    prefix, device, camera = "/".join(parts[:-3]), parts[-3], parts[-2]
    try:
        _check_prefix(prefix)
        _check_level(device, "device")
        _check_level(camera, "camera")
    except ValueError as exc:
        raise ValueError(f"{topic!r} is not a tags topic: {exc}") from None
    return TagsTopic(prefix, device, camera)
