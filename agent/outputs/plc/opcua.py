"""OPC UA client writes into a PLC's own nodes (asyncua's client on a loop thread of its own). Each node is
written with its own data type (read once per connection), so a DINT, an INT or a UInt32 node all take a number."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.sync import ThreadLoop
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from agent.outputs.plc.regmap import Address
from agent.outputs.plc.results import Value
from agent.outputs.plc.transport import PlcRefused, PlcUnreachable

__all__ = ["OpcUaTransport"]

_T = TypeVar("_T")


class OpcUaTransport:
    def __init__(self, endpoint: str, timeout_s: float) -> None:
        self.target = endpoint
        self._timeout = timeout_s
        self._loop: ThreadLoop | None = None
        self._client: Client | None = None
        self._types: dict[str, tuple[Node, ua.VariantType]] = {}
        # the client warns on every session (a shorter timeout granted, ...); the link reports what matters.
        # Only the client's loggers: the agent's own OPC UA server routes asyncua's server warnings to its log.
        logging.getLogger("asyncua.client").setLevel(logging.ERROR)

    def connect(self) -> None:
        if self._loop is None:
            self._loop = ThreadLoop(timeout=None)
            self._loop.daemon = True
            self._loop.start()
        self._types.clear()
        client = Client(self.target, timeout=self._timeout)
        self._run(client.connect())
        self._client = client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is not None:
            with contextlib.suppress(PlcUnreachable):  # already gone: nothing to close politely
                self._run(client.disconnect())
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def read_bool(self, address: Address) -> bool:
        node, _ = self._node(address.node)
        return bool(self._run(node.read_value()))

    def write(self, writes: Sequence[tuple[str, Address, Value]]) -> None:
        nodes: list[Node] = []
        values: list[ua.DataValue] = []
        for _signal, address, value in writes:
            node, vtype = self._node(address.node)
            nodes.append(node)
            values.append(ua.DataValue(ua.Variant(_as(vtype, value), vtype)))
        if nodes:
            client = self._connected()
            results = self._run(client.write_values(nodes, values, raise_on_partial_error=False))
            for (signal, address, _), status in zip(writes, results, strict=True):
                if not status.is_good():
                    raise PlcRefused(f"{self.target} refused writing {signal} to {address}: {status.name}")

    def _node(self, node_id: str) -> tuple[Node, ua.VariantType]:
        known = self._types.get(node_id)
        if known is None:
            node = self._connected().get_node(node_id)
            known = (node, self._run(node.read_data_type_as_variant_type()))
            self._types[node_id] = known
        return known

    def _connected(self) -> Client:
        if self._client is None:
            raise PlcUnreachable(f"{self.target}: not connected")
        return self._client

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise PlcUnreachable(f"{self.target}: not connected")
        try:
            return loop.post(asyncio.wait_for(coro, self._timeout * 2))
        except UaStatusCodeError as exc:  # the server answered: no such node, wrong type, not writable
            raise PlcRefused(f"{self.target}: {exc}") from exc
        except (OSError, TimeoutError, asyncio.TimeoutError, ConnectionError, UaError) as exc:
            raise PlcUnreachable(f"{self.target}: {type(exc).__name__}: {exc}") from exc


def _as(vtype: ua.VariantType, value: Value) -> Value:
    """``value`` in the form the node's type takes (a bool into a numeric node is 0/1, a number into a
    Boolean node is its truth)."""
    if vtype == ua.VariantType.Boolean:
        return bool(value)
    if vtype == ua.VariantType.String:
        return str(value)
    return int(value)
