"""The installed edge-agent's version, as its status document, ``/metrics`` and ``--version`` report it.

Standard library only, so that the gateway and the CLI can say it without loading the MQTT publisher.
"""

from __future__ import annotations

import importlib.metadata

__all__ = ["agent_version"]


def agent_version() -> str:
    """The installed distribution's version; ``0+unknown`` when edge-agent runs from a tree not installed."""
    try:
        return importlib.metadata.version("edge-agent")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
