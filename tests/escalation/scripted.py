"""A scripted ``edge_agent.v1.Escalation`` servicer on a real grpc.aio server, for the agent-side tests.

It runs on its own event loop thread (like :class:`tests.fakes.gateway.GatewayThread`)
and answers each Describe call with what ``behave(request)`` returns:

* a ``DescribeResponse``: answered (after ``delay_s``);
* ``Fail(code, details)``: the call is aborted with that status;
* ``Hang()``: no answer until the client's deadline passes.

``requests`` records every call it received (thread-safe). ``stop()`` then
``start()`` brings it back on the same port (a gateway that went away and came
back); ``set_health(False)`` turns its health service NOT_SERVING.

    with ScriptedGateway() as gw:
        gw.behave = lambda req: Fail(grpc.StatusCode.UNAVAILABLE, "ollama down")
        ... EscalationConfig(gateway=gw.address) ...
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.wire import escalation_pb2 as pb
from agent.wire import escalation_pb2_grpc as pb_grpc

T = TypeVar("T")

SERVICE = "edge_agent.v1.Escalation"


def reply(verdict: int = pb.VERDICT_DEFECT, tags: tuple[tuple[str, float], ...] = (("scratch", 0.83),),
          description: str = "A thin scratch on the upper left of the part.") -> pb.DescribeResponse:
    return pb.DescribeResponse(verdict=verdict, tags=[pb.Tag(label=name, confidence=c) for name, c in tags],
                               defects=[pb.Defect(type="scratch", location="upper left", severity=pb.SEVERITY_LOW)],
                               description=description, model="llava:7b", vlm_ms=5.0, gateway_ms=6.0, attempts=1)


@dataclasses.dataclass(frozen=True)
class Fail:
    code: grpc.StatusCode
    details: str = "scripted failure"


@dataclasses.dataclass(frozen=True)
class Hang:
    """Answer nothing until the client gives up."""


Behaviour = Callable[[pb.DescribeRequest], "pb.DescribeResponse | Fail | Hang"]


class _Servicer(pb_grpc.EscalationServicer):
    def __init__(self, owner: ScriptedGateway) -> None:
        self.owner = owner

    async def Describe(self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext) -> pb.DescribeResponse:
        owner = self.owner
        with owner.lock:
            owner.requests.append(request)
            behave, delay = owner.behave, owner.delay_s
        action = behave(request)
        if isinstance(action, Hang):
            await asyncio.sleep(3600)
        if delay:
            await asyncio.sleep(delay)
        if isinstance(action, Fail):
            await context.abort(action.code, action.details)
        if not isinstance(action, pb.DescribeResponse):
            raise TypeError(f"behave returned {action!r}")
        return action


class ScriptedGateway:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, unix_path: str | None = None,
                 max_receive_bytes: int | None = None,
                 credentials: grpc.ServerCredentials | None = None) -> None:
        self.behave: Behaviour = lambda request: reply()
        self.delay_s = 0.0
        self.requests: list[pb.DescribeRequest] = []
        self.lock = threading.Lock()
        self._host, self._port, self._unix = host, port, unix_path
        self._max_receive = max_receive_bytes
        self._credentials = credentials
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="scripted-gateway", daemon=True)
        self._thread.start()
        self._server: grpc.aio.Server | None = None
        self._health: Any = None

    @property
    def address(self) -> str:
        return f"unix:{self._unix}" if self._unix else f"{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    def calls(self) -> int:
        with self.lock:
            return len(self.requests)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> ScriptedGateway:
        self._run(self._start())
        return self

    async def _start(self) -> None:
        options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0),
                                          ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                                          ("grpc.keepalive_permit_without_calls", 1)]
        if self._max_receive is not None:
            options.append(("grpc.max_receive_message_length", self._max_receive))
        server = grpc.aio.server(options=options)
        pb_grpc.add_EscalationServicer_to_server(_Servicer(self), server)  # type: ignore[no-untyped-call]
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        await self._health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        listen = f"unix:{self._unix}" if self._unix else f"{self._host}:{self._port}"
        bound = (server.add_secure_port(listen, self._credentials) if self._credentials is not None
                 else server.add_insecure_port(listen))
        if not self._unix:
            self._port = bound
        await server.start()
        self._server = server

    def set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self._run(self._health.set(SERVICE, status))

    def stop(self) -> None:
        """Stop listening at once (calls in progress are cancelled); ``start()`` listens again on the same port."""
        server, self._server = self._server, None
        if server is not None:
            self._run(server.stop(0))

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> ScriptedGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
