"""The gateway under systemd: READY=1 once the gRPC port listens, WATCHDOG=1 from the event loop,
a STATUS= line, STOPPING=1, and the gateway's ``/metrics`` + ``/healthz``.

The pings come from a task on the gateway's own asyncio loop: while the loop runs, they
come; a loop blocked by a bug (a synchronous call that never returns) stops them, and
systemd restarts the gateway. Ollama being away does not stop them (a restart would not
bring it back); it makes ``/healthz`` answer 503 and the gRPC health NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from agent.errors import MetricsError
from agent.gateway.config import GatewayConfig
from agent.gateway.metrics import render_gateway_metrics
from agent.gateway.server import GatewayServer, ollama_words
from agent.ops.endpoint import MetricsServer
from agent.ops.notify import Notifier

__all__ = ["GatewayHealth"]

log = logging.getLogger(__name__)

_LOOP_WINDOW_S = 10.0  # /healthz: the event loop must have run the heartbeat task within this


class GatewayHealth:
    def __init__(self, server: GatewayServer, config: GatewayConfig, notifier: Notifier,
                 *, status_interval_s: float = 10.0) -> None:
        self.server = server
        self.config = config
        self.notifier = notifier
        self.status_interval_s = status_interval_s
        self.metrics: MetricsServer | None = None
        self.beat = time.monotonic()
        self.pings = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start /metrics, the heartbeat task, and send READY=1 (the server is listening already)."""
        if self.config.metrics.enabled:
            metrics = MetricsServer(self.config.metrics.listen, metrics=self.metrics_text, health=self.health_document)
            try:
                metrics.start()
                self.metrics = metrics
            except MetricsError as exc:
                log.error("%s; running without /metrics and /healthz", exc)
        self.beat = time.monotonic()
        self._task = asyncio.create_task(self._heartbeat(), name="gateway-watchdog")
        self.notifier.ready(f"ready: {self.status_line()}")

    async def stopping(self) -> None:
        """STOPPING=1 and the heartbeat ended (call before the graceful stop)."""
        self.notifier.stopping(f"stopping: letting calls in progress finish ({self.config.shutdown_grace_s:g} s)")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        self.notifier.close()

    async def _heartbeat(self) -> None:
        ping_s = self.notifier.watchdog_interval_s
        tick = min(ping_s, 1.0) if ping_s else 1.0
        next_status = time.monotonic() + self.status_interval_s
        while True:
            self.beat = time.monotonic()
            if ping_s and self.notifier.watchdog():
                self.pings += 1
            if self.beat >= next_status:
                self.notifier.status(self.status_line())
                next_status = self.beat + self.status_interval_s
            await asyncio.sleep(tick)

    def status_line(self) -> str:
        """``listening on 127.0.0.1:50061; SERVING; 12 calls (OK 11, UNAVAILABLE 1); 0 running, 0 waiting``."""
        s = self.server
        codes = s.stats.totals_by_code()
        health = "SERVING" if s.health.serving else f"NOT_SERVING ({s.health.reason})"
        calls = f"{sum(codes.values())} calls"
        if codes:
            calls += " (" + ", ".join(f"{k} {v}" for k, v in sorted(codes.items())) + ")"
        admission = s.service.admission
        line = (f"listening on {s.address}; Ollama {ollama_words(self.config)} model {self.config.ollama.model}: "
                f"{health}; {calls}; {admission.running} running, {admission.waiting} waiting")
        if self.metrics is not None:
            line += f"; metrics {self.metrics.url}/metrics"
        return line

    def metrics_text(self) -> str:
        return render_gateway_metrics(self.server, self.config.ollama.model, ollama_words(self.config))

    def health_document(self) -> tuple[bool, dict[str, Any]]:
        s = self.server
        loop_age = time.monotonic() - self.beat
        problems: list[str] = []
        if loop_age > _LOOP_WINDOW_S:
            problems.append(f"the gateway's event loop has not run for {loop_age:.1f} s")
        if not s.health.serving:
            problems.append(f"NOT_SERVING: {s.health.reason}")
        admission = s.service.admission
        doc: dict[str, Any] = {
            "status": "ok" if not problems else "unhealthy",
            "problems": problems,
            "address": s.address,
            "ollama": {"host": ollama_words(self.config), "model": self.config.ollama.model,
                       "serving": bool(s.health.serving), "reason": s.health.reason},
            "calls": s.stats.totals_by_code(),
            "running": admission.running,
            "waiting": admission.waiting,
            "loop_heartbeat_age_s": round(loop_age, 3),
        }
        if s.pool is not None:
            doc["ollama"]["servers"] = [
                {"name": v.name, "url": v.url, "weight": v.weight, "healthy": v.healthy, "problem": v.problem,
                 "breaker": v.breaker, "outstanding": v.outstanding, "calls": v.outcomes} for v in s.pool.servers()]
            doc["ollama"]["retried_elsewhere"] = s.pool.retried
        return not problems, doc
