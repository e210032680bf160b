"""Modbus TCP to a PLC's coils and holding registers (pymodbus' synchronous client)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from agent.outputs.plc.regmap import Address
from agent.outputs.plc.results import Value, encode
from agent.outputs.plc.transport import PlcRefused, PlcUnreachable

__all__ = ["ModbusTransport"]

# Modbus exception codes (Modbus Application Protocol v1.1b3, 7)
_EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "device failure",
               6: "device busy"}


class ModbusTransport:
    def __init__(self, host: str, port: int, unit_id: int, timeout_s: float) -> None:
        self.target = f"modbus://{host}:{port} unit {unit_id}"
        self._unit = unit_id
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # it logs each failed connect; the link reports
        self._client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0)

    def connect(self) -> None:
        if not self._client.connect():  # type: ignore[no-untyped-call]
            raise PlcUnreachable(f"{self.target}: cannot connect")

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def read_bool(self, address: Address) -> bool:
        if address.table == "coil":
            reply = self._call(address, lambda: self._client.read_coils(address.start, count=1, device_id=self._unit))
            return bool(reply.bits[0])
        reply = self._call(address, lambda: self._client.read_holding_registers(address.start, count=1,
                                                                                device_id=self._unit))
        return bool(reply.registers[0])

    def write(self, writes: Sequence[tuple[str, Address, Value]]) -> None:
        for signal, address, value in writes:
            data = encode(signal, address, value)
            start, unit = address.start, self._unit
            if isinstance(data, bool):
                bit = data
                self._call(address, lambda: self._client.write_coil(start, bit, device_id=unit), signal)  # noqa: B023
            else:
                words = data
                self._call(address, lambda: self._client.write_registers(start, words, device_id=unit),  # noqa: B023
                           signal)

    def _call(self, address: Address, request: Callable[[], ModbusPDU], signal: str = "") -> ModbusPDU:
        try:
            reply = request()
        except ModbusException as exc:  # connection lost, no answer within the timeout
            self._client.close()  # type: ignore[no-untyped-call]
            raise PlcUnreachable(f"{self.target}: {exc}") from exc
        except OSError as exc:
            self._client.close()  # type: ignore[no-untyped-call]
            raise PlcUnreachable(f"{self.target}: {exc}") from exc
        if not isinstance(reply, ModbusPDU):
            raise PlcUnreachable(f"{self.target}: no answer to the request on {address}")
        if reply.isError():
            code = getattr(reply, "exception_code", 0)
            what = _EXCEPTIONS.get(code, f"exception {code}")
            raise PlcRefused(f"{self.target} refused {'writing ' + signal if signal else 'reading'} at {address}: "
                             f"{what} (code {code})")
        return reply
