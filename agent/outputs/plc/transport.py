"""The one interface the PLC link needs of a protocol: connect, read bits, write values. Two implementations:
:class:`agent.outputs.plc.modbus.ModbusTransport` and :class:`agent.outputs.plc.opcua.OpcUaTransport`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from agent.errors import EdgeAgentError
from agent.outputs.plc.regmap import Address
from agent.outputs.plc.results import Value

__all__ = ["PlcError", "PlcRefused", "PlcTransport", "PlcUnreachable"]


class PlcError(EdgeAgentError):
    """A PLC could not be used."""


class PlcUnreachable(PlcError):
    """No connection to the PLC, or it did not answer within the timeout: reconnect."""


class PlcRefused(PlcError):
    """The PLC answered and refused one request (no such register or node, wrong type, read-only)."""


class PlcTransport(Protocol):
    @property
    def target(self) -> str:
        """The PLC's address, for messages."""
        ...

    def connect(self) -> None:
        """Open the connection (PlcUnreachable when it cannot)."""

    def close(self) -> None: ...

    def read_bool(self, address: Address) -> bool:
        """One bit the PLC writes (trigger, result_ack)."""
        ...

    def write(self, writes: Sequence[tuple[str, Address, Value]]) -> None:
        """``(signal, address, value)`` in order; PlcRefused names the first one refused."""
