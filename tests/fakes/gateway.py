"""Run the real escalation gateway (``agent.gateway.server.serve``) in a background thread,
for synchronous tests: its asyncio loop lives in the thread, the test talks to it over gRPC.

    with FakeOllama() as fake, GatewayThread(gateway_config(fake.url)) as gw:
        stub = EscalationStub(grpc.insecure_channel(gw.address))
        reply = stub.Describe(request, timeout=5)

:func:`gateway_config` gives a config for tests: a free loopback port, the fake
Ollama's URL, fast health polling, quiet summaries; keyword arguments replace
whole sections or fields (``limits={"queue": 0}``, ``ollama={"timeout_s": 2}``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from agent.gateway.config import GatewayConfig
from agent.gateway.server import GatewayServer, serve
from agent.gateway.vlm import Vlm

__all__ = ["GatewayThread", "gateway_config"]

T = TypeVar("T")


def gateway_config(ollama_url: str, **overrides: Any) -> GatewayConfig:
    """A GatewayConfig for tests; mapping overrides are merged into the section of that name."""
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "ollama": {"host": ollama_url, "timeout_s": 10.0, "connect_timeout_s": 1.0},
        "health_interval_s": 0.1,
        "summary_interval_s": 0,
        "shutdown_grace_s": 0.5,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return GatewayConfig.model_validate(data)


class GatewayThread:
    """A started gateway on its own event loop thread. ``address``/``port`` are what clients dial."""

    def __init__(self, config: GatewayConfig, *, vlm: Vlm | None = None) -> None:
        self.config = config
        self._vlm = vlm
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="gateway-loop", daemon=True)
        self.server: GatewayServer | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def start(self, timeout: float = 15.0) -> GatewayThread:
        self._thread.start()
        try:
            self.server = self.call(serve(self.config, vlm=self._vlm), timeout)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            raise
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        """Run ``coro`` on the gateway's loop and return its result."""
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    @property
    def address(self) -> str:
        if self.server is None:
            raise RuntimeError("the gateway is not started; call start() first")
        return self.server.address

    @property
    def port(self) -> int | None:
        return self.server.port if self.server is not None else None

    def stop(self, grace: float | None = None) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            self.call(server.stop(self.config.shutdown_grace_s if grace is None else grace), 30)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> GatewayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
