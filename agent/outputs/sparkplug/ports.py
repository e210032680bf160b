"""What the edge node needs of its store and its connection, handed in by the runtime
(:mod:`agent.runtime.sparkplug`): an outputs stage imports no other stage, so the SQLite outbox of
:mod:`agent.publish.outbox` and the paho client's construction stay outside."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import paho.mqtt.client as mqtt

__all__ = ["Connection", "RowStore", "StoreStats", "StoredRow"]


class StoredRow(Protocol):
    """A row of the store (``agent.publish.outbox.OutboxRow``)."""

    @property
    def id(self) -> int: ...

    @property
    def payload(self) -> bytes: ...


class StoreStats(Protocol):
    @property
    def rows(self) -> int: ...


class RowStore(Protocol):
    """Where records wait until the broker read their DDATA (``agent.publish.outbox.Outbox``)."""

    def append(self, event_id: str, camera: str, topic: str, payload: bytes) -> int: ...

    def next_rows(self, after_id: int, limit: int) -> Sequence[StoredRow]: ...

    def delete(self, ids: list[int]) -> int: ...

    def stats(self) -> StoreStats: ...

    def close(self) -> None: ...


class Connection(Protocol):
    """How to (re)connect: ``connect_async`` with the config's host, port and keepalive."""

    def __call__(self, client: mqtt.Client) -> None: ...
