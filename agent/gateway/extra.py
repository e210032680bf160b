"""Is the ``ollama`` extra installed: the gateway's client of Ollama, which a camera box does not need.

Checked with ``importlib.util.find_spec``, which imports nothing, before the gateway's modules (which
import ``ollama`` at the top) are loaded: a missing package is one clear message with the command to run,
not an ImportError's traceback.
"""

from __future__ import annotations

import importlib.util

from agent.errors import GatewayError

__all__ = ["INSTALL", "require_ollama_extra"]

INSTALL = "pip install 'edge-agent[ollama]'"
NEEDED = ("ollama", "httpx")  # import names; httpx comes with ollama, and the gateway catches its errors


def require_ollama_extra() -> None:
    """GatewayError naming the install command when the ``ollama`` extra's packages are missing."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        raise GatewayError(f"`edge-agent gateway` needs the ollama extra, and {', '.join(missing)} "
                           f"{'is' if len(missing) == 1 else 'are'} not installed; run `{INSTALL}` "
                           "(in a source checkout: pip install -e '.[ollama]') on the gateway host; "
                           "the camera-side agent does not need it")
