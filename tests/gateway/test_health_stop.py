"""The gateway's health monitor stops even when its poll loses a cancellation (Python before 3.12 can drop
one that lands while ``asyncio.wait_for`` times out)."""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health

from agent.gateway.health import NOT_SERVING, HealthMonitor


class SwallowingVlm:
    """A VLM whose health check swallows the first cancellation it gets, as a lost one looks from outside."""

    model = "llava:7b"

    def __init__(self) -> None:
        self.checks = 0
        self.swallowed = 0
        self.in_check = asyncio.Event()

    async def check(self) -> str | None:
        self.checks += 1
        self.in_check.set()
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            if self.swallowed == 0:
                self.swallowed += 1
                return None  # the cancellation is gone: the poll goes on as if nothing happened
            raise
        return None


def test_stop_ends_the_poll_even_when_a_cancellation_is_lost() -> None:
    async def scenario() -> tuple[SwallowingVlm, Any]:
        servicer = health.aio.HealthServicer()
        vlm = SwallowingVlm()
        monitor = HealthMonitor(servicer, vlm, ["edge_agent.v1.Escalation"], interval_s=0.01)  # type: ignore[arg-type]
        await monitor.start(first_check_timeout_s=1.0)
        vlm.in_check.clear()
        await asyncio.wait_for(vlm.in_check.wait(), 2.0)  # the poll is inside a check now
        stop = asyncio.create_task(monitor.stop())
        done, _pending = await asyncio.wait({stop}, timeout=3.0)  # a hang, not a speed: 3 s is generous
        assert stop in done, "HealthMonitor.stop() waited for a poll that had lost its cancellation"
        return vlm, servicer

    vlm, servicer = asyncio.run(scenario())
    assert vlm.swallowed == 1
    assert servicer._server_status[""] == NOT_SERVING  # noqa: SLF001 - grpc_health keeps no public getter
