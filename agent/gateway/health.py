"""The gateway's health: the standard ``grpc.health.v1.Health`` service, fed by a poll of Ollama.

:class:`HealthMonitor` asks the VLM (``Vlm.check``: Ollama's ``/api/show`` for
the model) every ``health_interval_s`` and sets both the overall status (``""``)
and the escalation service's (``edge_agent.v1.Escalation``): SERVING when Ollama
answers and has the model, NOT_SERVING when it is unreachable or the model is not
pulled. Each change is logged once with its reason (a warning when it goes down,
info when it comes back). :meth:`HealthMonitor.poke` makes it look again at once:
the servicer pokes it when a call finds Ollama gone. On shutdown
:meth:`HealthMonitor.stop` turns everything NOT_SERVING first, so that load
balancers stop sending calls before the server stops taking them.

The state is one settable value: :meth:`HealthMonitor.set` with ``None``
(SERVING) or a reason (NOT_SERVING), and optionally the short public phrase that
callers may see (``public="loading model"`` while a preload runs). The detailed
reason (Ollama's address, its error text) goes to the gateway's log and to its
local ``/healthz`` only.

:class:`DetailedHealthServicer` answers ``Check`` from that cached state, never
asking Ollama on the caller's time (a frozen Ollama cannot make a probe time out),
and adds one trailing metadata entry, ``edge-health-reason-bin`` (UTF-8): the
public phrase, one of :data:`PUBLIC_REASONS` ("serving", "VLM unreachable",
"model not available", ...). It carries no host, model list or error text: the
health service answers anyone, authenticated or not, so that load balancers and
probes can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from grpc_health.v1 import health, health_pb2

from agent.gateway.vlm import Vlm
from agent.redact import redact
from agent.wire.health import REASON_KEY

__all__ = ["NOT_SERVING", "PUBLIC_REASONS", "REASON_KEY", "SERVING", "DetailedHealthServicer", "HealthMonitor",
           "public_reason"]

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PUBLIC_REASONS = ("serving", "starting", "stopping", "loading model", "VLM unreachable", "model not available",
                  "VLM not ready")
# what a detailed reason from Vlm.check says, in the public words (first match wins)
_PUBLIC_WORDS = (
    (("not pulled", "cannot take images", "no model", "vision"), "model not available"),
    (("loading",), "loading model"),
    (("unreachable", "did not answer", "connection", "timed out"), "VLM unreachable"),
)


def public_reason(reason: str | None) -> str:
    """The phrase callers may see for a detailed reason (None: serving); never the reason's own text."""
    if reason is None:
        return "serving"
    lowered = reason.lower()
    for words, phrase in _PUBLIC_WORDS:
        if any(w in lowered for w in words):
            return phrase
    return "VLM not ready"


class HealthMonitor:
    def __init__(self, servicer: health.aio.HealthServicer, vlm: Vlm, services: list[str],
                 interval_s: float) -> None:
        self.servicer = servicer
        self._vlm = vlm
        self._services = [health.OVERALL_HEALTH, *services]
        self._interval_s = interval_s
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.serving: bool | None = None  # None until the first check
        self.reason = "not checked yet"  # the detailed reason: logs and the local /healthz only
        self.public = "starting"  # what callers of the health service see

    async def check_now(self) -> None:
        """Ask the VLM once and set the status from the answer."""
        reason = await self._vlm.check()
        await self.set(reason)

    async def start(self, first_check_timeout_s: float) -> None:
        """Set NOT_SERVING, check once (bounded by ``first_check_timeout_s``), then poll in the background."""
        await self._set_all(NOT_SERVING)
        try:
            await asyncio.wait_for(self.check_now(), first_check_timeout_s)
        except asyncio.TimeoutError:
            await self.set(f"Ollama did not answer the first health check within {first_check_timeout_s:g} s")
        except Exception:  # a bug in a check must not stop the gateway from starting; it is logged
            log.exception("health check failed")
        self._task = asyncio.create_task(self._poll(), name="gateway-health")

    def poke(self, reason: str = "") -> None:
        """Look again now (a call just found Ollama unreachable or the model missing)."""
        if reason:
            log.debug("health re-check requested", extra={"reason": reason})
        self._poked.set()

    async def stop(self) -> None:
        """Everything NOT_SERVING for good (later changes are ignored), and the poll stopped.

        Python before 3.12 can lose a cancellation that lands while ``asyncio.wait_for`` is timing out (the
        poll's wait), so the poll also stops on a flag and the cancel is repeated until the task ends."""
        await self.servicer.enter_graceful_shutdown()
        self._stopping = True
        self.serving, self.reason, self.public = False, "stopping", "stopping"
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.debug("health poll ended with %r", task.exception())

    async def _poll(self) -> None:
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self._interval_s)
            self._poked.clear()
            try:
                await self.check_now()
            except Exception:  # a bug in a check must not end the health service; it is logged
                log.exception("health check failed")

    async def set(self, reason: str | None, *, public: str | None = None) -> None:
        """SERVING (``reason`` None) or NOT_SERVING for ``reason``; ``public`` is the phrase callers see
        (default: :func:`public_reason` of the reason). A change is logged once. Ignored once stopping."""
        if self._stopping:
            return
        serving = reason is None
        phrase = public if public is not None else public_reason(reason)
        if serving != self.serving or phrase != self.public:
            if serving:
                log.info("gateway SERVING: Ollama is reachable and has the model",
                         extra={"model": self._vlm.model})
            else:  # loading the model is expected (start, Ollama restart): info, not a warning
                log.log(logging.INFO if (reason or "").startswith("loading:") else logging.WARNING,
                        "gateway NOT_SERVING: %s", reason, extra={"model": self._vlm.model})
        self.serving, self.reason = serving, redact(reason) if reason else "serving"
        self.public = phrase
        await self._set_all(SERVING if serving else NOT_SERVING)

    async def _set_all(self, status: int) -> None:
        for name in self._services:
            await self.servicer.set(name, status)


class DetailedHealthServicer(health.aio.HealthServicer):  # type: ignore[misc]  # grpc_health is untyped
    """The standard health servicer; ``Check`` answers also carry the public reason as trailing metadata
    (see the module's docstring). Answers from the cached state only. Set ``monitor`` before serving."""

    monitor: HealthMonitor | None = None

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        if self.monitor is not None:
            context.set_trailing_metadata(((REASON_KEY, self.monitor.public.encode("utf-8")),))
        return await super().Check(request, context)
