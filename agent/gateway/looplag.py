"""How late the gateway's event loop runs: a task that sleeps ``tick_s`` and measures how much longer it took.

Everything the gateway serves runs on one asyncio loop; a handler that blocks it (a decode on the loop,
a huge request parsed in Python) delays every other call and health probe by as much. :class:`LoopLag`
keeps the largest delay seen (``max_s``, for ``/metrics``) and counts the stalls of ``stall_s`` or more;
a stall is logged as a warning at most once a minute, with the number since the last line. Every tick's
delay also goes into a histogram (``edge_gateway_event_loop_lag_seconds``), so that a scraper can tell
how late the loop ran between two scrapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from agent.ops.histogram import Histogram

__all__ = ["LoopLag"]

log = logging.getLogger(__name__)

_LOG_EVERY_S = 60.0
LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class LoopLag:
    def __init__(self, tick_s: float = 0.02, stall_s: float = 0.05) -> None:
        self.tick_s = tick_s
        self.stall_s = stall_s
        self.max_s = 0.0
        self.stalls = 0
        self._unlogged = 0
        self._logged_at = -_LOG_EVERY_S
        self._task: asyncio.Task[None] | None = None
        self.histogram = Histogram(LAG_BUCKETS_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def observe(self, lag_s: float) -> None:
        """One tick that came ``lag_s`` late."""
        self.max_s = max(self.max_s, lag_s)
        self.histogram.observe(lag_s)
        if lag_s < self.stall_s:
            return
        self.stalls += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:
            log.warning("gateway event loop stalled for %.0f ms (%d stall(s) of %.0f ms or more since the last "
                        "such line)", lag_s * 1000, self._unlogged, self.stall_s * 1000)
            self._logged_at, self._unlogged = now, 0

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.tick_s)
            self.observe(max(0.0, time.perf_counter() - before - self.tick_s))
