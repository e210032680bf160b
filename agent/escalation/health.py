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

:class:`DetailedHealthServicer` is the standard servicer plus two trailing metadata
entries on every ``Check`` answer, for ``edge-agent doctor`` and other tools that want
to know *why* (the standard response is only SERVING or NOT_SERVING):
``edge-health-reason-bin`` (UTF-8: "serving" or the reason) and
``edge-ollama-models-bin`` (UTF-8: the models pulled in Ollama, comma-separated, or
"error: <why they cannot be listed>"; refreshed at most every ``health_interval_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from grpc_health.v1 import health, health_pb2

from agent.escalation.vlm import Vlm

__all__ = ["MODELS_KEY", "REASON_KEY", "DetailedHealthServicer", "HealthMonitor"]

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
REASON_KEY = "edge-health-reason-bin"
MODELS_KEY = "edge-ollama-models-bin"


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
        self.reason = "not checked yet"
        self._models: tuple[str, ...] | str = "not listed yet"
        self._models_at = -1e9
        self._models_lock = asyncio.Lock()

    async def ollama_models(self) -> tuple[str, ...] | str:
        """The models pulled in Ollama, or why they cannot be listed; asked at most every ``interval_s``.
        A VLM without ``list_models`` (a test double) gives "not available"."""
        lister = getattr(self._vlm, "list_models", None)
        if lister is None:
            return "not available"
        async with self._models_lock:
            if time.monotonic() - self._models_at >= self._interval_s:
                self._models = await lister()
                self._models_at = time.monotonic()
            return self._models

    async def check_now(self) -> None:
        """Ask the VLM once and set the status from the answer."""
        reason = await self._vlm.check()
        await self._set(reason)

    async def start(self, first_check_timeout_s: float) -> None:
        """Set NOT_SERVING, check once (bounded by ``first_check_timeout_s``), then poll in the background."""
        await self._set_all(NOT_SERVING)
        try:
            await asyncio.wait_for(self.check_now(), first_check_timeout_s)
        except asyncio.TimeoutError:
            self.reason = f"Ollama did not answer the first health check within {first_check_timeout_s:g} s"
            log.warning("gateway NOT_SERVING: %s", self.reason, extra={"model": self._vlm.model})
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

    async def _set(self, reason: str | None) -> None:
        serving = reason is None
        if serving != self.serving:
            if serving:
                log.info("gateway SERVING: Ollama is reachable and has the model",
                         extra={"model": self._vlm.model})
            else:
                log.warning("gateway NOT_SERVING: %s", reason, extra={"model": self._vlm.model})
        self.serving, self.reason = serving, reason or "serving"
        await self._set_all(SERVING if serving else NOT_SERVING)

    async def _set_all(self, status: int) -> None:
        for name in self._services:
            await self.servicer.set(name, status)


class DetailedHealthServicer(health.aio.HealthServicer):  # type: ignore[misc]  # grpc_health is untyped
    """The standard health servicer; ``Check`` answers also carry the reason and Ollama's model list
    as trailing metadata (see the module's docstring). Set ``monitor`` before serving."""

    monitor: HealthMonitor | None = None

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        if self.monitor is not None:
            models = await self.monitor.ollama_models()
            listed = ",".join(models) if isinstance(models, tuple) else f"error: {models}"
            context.set_trailing_metadata(((REASON_KEY, self.monitor.reason.encode("utf-8")),
                                           (MODELS_KEY, listed.encode("utf-8"))))
        return await super().Check(request, context)
