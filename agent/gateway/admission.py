"""Admission of ``Describe`` calls: who may call, and whether there is room, decided before the request is read.

:class:`CallGate` is a ``grpc.aio`` server interceptor. It runs when a call's
headers arrive, before gRPC reads the request message, and for ``Describe``:

1. authenticates the caller when ``auth.tokens_file`` is set (``authorization:
   Bearer TOKEN``; UNAUTHENTICATED otherwise);
2. takes a :class:`Ticket` from :class:`Admission`: at most ``parallel + queue``
   calls are admitted at once (running or waiting for a VLM slot), and at most
   ``limits.per_client`` of one authenticated client; a call beyond either is
   refused at once with RESOURCE_EXHAUSTED;
3. waits, still before its request is read, for one of ``2 * parallel`` read
   permits (:meth:`Admission.reading`): the calls that run and the next ones are
   read, checked and decoded; the others wait in the queue as headers only.

A refused call is answered by a handler that never reads the request, so a flood
of large requests costs the gateway their headers only; the memory requests can
take is bounded by ``2 * parallel * limits.max_message_bytes`` (and what each
takes on its way to Ollama), and so is the work on the event loop. The ticket
is released when the call's task ends, however it ends (the client may cancel
before its message arrives, and then gRPC never runs the handler). Health and
reflection calls pass untouched: no count of long-lived health watches can keep
``Describe`` out, and no ``Describe`` flood can keep health probes out.

:meth:`Admission.slot` then gives an admitted call one of ``parallel`` VLM slots,
FIFO.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from agent.errors import GatewayError
from agent.gateway.auth import ANONYMOUS, TokenTable, bearer_token

__all__ = ["Admission", "CallGate", "ClientBusy", "QueueFull", "Ticket"]

log = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0  # a refused caller is logged at most this often (per reason), with the count since


class QueueFull(GatewayError):
    """Every VLM slot is busy and the wait queue is full."""


class ClientBusy(GatewayError):
    """This client already has ``limits.per_client`` calls running or waiting."""


class Ticket:
    """One admitted call; :meth:`release` (idempotent) gives its place back."""

    def __init__(self, admission: Admission, client: str) -> None:
        self.client = client
        self._admission = admission
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self.client)  # noqa: SLF001 - the ticket is the admission's own

    def rename(self, client: str) -> None:
        """Count this call for ``client`` instead (a name known only in the handler: a certificate's);
        ClientBusy when that client is at its quota."""
        if client == self.client or self._released:
            return
        self._admission._move(self.client, client)  # noqa: SLF001
        self.client = client


class Admission:
    """``parallel`` VLM slots and room for ``queue`` more admitted calls; ``per_client`` per named client
    (None: no per-client quota, as when nobody authenticates)."""

    def __init__(self, parallel: int, queue: int, per_client: int | None = None) -> None:
        self.parallel = parallel
        self.queue = queue
        self.per_client = per_client
        self._slots = asyncio.Semaphore(parallel)
        self.read_permits = 2 * parallel
        self._reads = asyncio.Semaphore(self.read_permits)
        self.reading = 0
        self.admitted = 0
        self.running = 0
        self.by_client: collections.Counter[str] = collections.Counter()

    @property
    def waiting(self) -> int:
        """Admitted calls not running yet (unread, or read and waiting for a VLM slot)."""
        return self.admitted - self.running

    def admit(self, client: str = ANONYMOUS) -> Ticket:
        """A ticket, or QueueFull / ClientBusy at once (never waits)."""
        if self.admitted >= self.parallel + self.queue:
            raise QueueFull(f"the gateway is busy: {self.running} VLM call(s) running (limits.parallel="
                            f"{self.parallel}) and {self.admitted - self.running} waiting (limits.queue="
                            f"{self.queue}); retry later with backoff, or add gateways")
        self._check_quota(client)
        self.admitted += 1
        self.by_client[client] += 1
        return Ticket(self, client)

    def _check_quota(self, client: str) -> None:
        if self.per_client is not None and client != ANONYMOUS and self.by_client[client] >= self.per_client:
            raise ClientBusy(f"client {client!r} already has {self.by_client[client]} call(s) running or waiting "
                             f"(limits.per_client={self.per_client}); wait for their answers before sending more")

    def _release(self, client: str) -> None:
        self.admitted -= 1
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]

    def _move(self, old: str, new: str) -> None:
        self._check_quota(new)
        self.by_client[new] += 1
        self.by_client[old] -= 1
        if self.by_client[old] <= 0:
            del self.by_client[old]

    async def read_permit(self) -> Callable[[], None]:
        """Wait (FIFO) for one of the ``2 * parallel`` read permits; return its release (idempotent)."""
        await self._reads.acquire()
        self.reading += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.reading -= 1
                self._reads.release()

        return release

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``parallel`` VLM slots for the body, waiting (FIFO) for one to free up."""
        await self._slots.acquire()
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()


Refusal = Callable[[str, str], None]  # (client, gRPC code name) of a refused call, for the call counts


class CallGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio's interceptor base is untyped
    """Authenticate and admit ``method`` calls before their request is read (see the module's docstring).
    The handler of an admitted call gets its ticket as a third argument: ``handler(request, context, ticket)``;
    ``deserializer``, when given, replaces the method's own (the gateway's counts fields before parsing)."""

    def __init__(self, method: str, admission: Admission, tokens: TokenTable | None,
                 handler: Callable[[Any, grpc.aio.ServicerContext, Ticket], Awaitable[Any]],
                 on_refused: Refusal = lambda client, code: None,
                 deserializer: Callable[[bytes], Any] | None = None) -> None:
        self._method = method
        self._deserializer = deserializer
        self._admission = admission
        self._tokens = tokens
        self._handler = handler
        self._on_refused = on_refused
        self._warned: dict[str, tuple[float, int]] = {}

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if details.method != self._method or handler is None:
            return handler
        client = ANONYMOUS
        if self._tokens is not None:
            token = bearer_token(details.invocation_metadata)
            name = self._tokens.identify(token) if token else None
            if name is None:
                why = "no bearer token" if not token else "an unknown bearer token"
                return self._refuse(ANONYMOUS, grpc.StatusCode.UNAUTHENTICATED, why,
                                    f"the gateway needs a client token: the call carried {why}; send "
                                    "'authorization: Bearer TOKEN' (the agent: escalation.token_file) with a token "
                                    "from the gateway's auth.tokens_file")
            client = name
        try:
            ticket = self._admission.admit(client)
        except (QueueFull, ClientBusy) as exc:
            return self._refuse(client, grpc.StatusCode.RESOURCE_EXHAUSTED, type(exc).__name__, str(exc))
        task = asyncio.current_task()
        if task is not None:  # the call's own task: it ends however the call ends, handler run or not
            task.add_done_callback(lambda _task: ticket.release())
        release_read = await self._admission.read_permit()  # the request stays unread until then
        if task is not None:
            task.add_done_callback(lambda _task: release_read())

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await self._handler(request, context, ticket)
            finally:
                release_read()
                ticket.release()

        parse = self._deserializer or handler.request_deserializer
        return grpc.unary_unary_rpc_method_handler(admitted, request_deserializer=parse,
                                                   response_serializer=handler.response_serializer)

    def _refuse(self, client: str, code: grpc.StatusCode, kind: str, message: str) -> Any:
        self._on_refused(client, code.name)
        self._log_refusal(client, code, kind, message)

        async def refuse(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            await context.abort(code, message)  # the request stream is never read

        return grpc.stream_unary_rpc_method_handler(refuse)

    def _log_refusal(self, client: str, code: grpc.StatusCode, kind: str, message: str) -> None:
        key = f"{client}/{kind}"
        now = time.monotonic()
        last, count = self._warned.get(key, (-_WARN_EVERY_S, 0))
        if now - last < _WARN_EVERY_S:
            self._warned[key] = (last, count + 1)
            return
        self._warned[key] = (now, 0)
        level = logging.WARNING if code == grpc.StatusCode.UNAUTHENTICATED else logging.INFO
        log.log(level, "describe refused: %s", message, extra={
            "client": client, "code": code.name, "refused_since_last_log": count})
