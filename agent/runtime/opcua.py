"""Starting the agent's OPC UA server (:mod:`agent.outputs.opcua_server`) beside the live path: it hears the
published events through the event fan-out and reads the ops snapshots, never the service."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.config.models import AgentConfig
from agent.errors import OpcUaServerError
from agent.ops.snapshot import AgentSnapshot
from agent.runtime.fanout import EventFanout

if TYPE_CHECKING:  # asyncua is the `plant` extra's: loaded only when the server is enabled
    from agent.outputs.opcua_server.server import OpcUaServer

__all__ = ["open_opcua_server"]


def open_opcua_server(config: AgentConfig, snapshot: Callable[[], AgentSnapshot],
                      events: EventFanout) -> OpcUaServer | None:
    """The listening server, told of every event from now on; None when ``opcua_server.enabled`` is off.
    OpcUaServerError when it cannot listen or its files are wrong."""
    if not config.opcua_server.enabled:
        return None
    try:
        from agent.outputs.opcua_server.server import OpcUaServer
    except ImportError as exc:
        raise OpcUaServerError(f"opcua_server.enabled needs the asyncua package ({exc}); install the plant extra: "
                               "pip install 'edge-agent[plant]'") from exc
    server = OpcUaServer(config.opcua_server, snapshot, [c.id for c in config.cameras])
    server.start()
    events.add(server)
    return server
