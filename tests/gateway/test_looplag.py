"""LoopLag sees a blocked event loop, counts stalls and logs them at most once a minute."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from agent.gateway.looplag import LoopLag


def test_stalls_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    lag = LoopLag(stall_s=0.05)
    with caplog.at_level(logging.WARNING, logger="agent.gateway.looplag"):
        for late in (0.001, 0.049, 0.08, 0.2, 0.06):  # three of them at or above 50 ms
            lag.observe(late)
    assert (lag.stalls, lag.max_s) == (3, 0.2)
    assert [r.getMessage() for r in caplog.records] == [
        "gateway event loop stalled for 80 ms (1 stall(s) of 50 ms or more since the last such line)"]


def test_a_blocked_loop_is_seen() -> None:
    async def scenario() -> LoopLag:
        lag = LoopLag(tick_s=0.01)
        lag.start()
        await asyncio.sleep(0.03)
        time.sleep(0.12)  # blocks the loop, as a decode on it would
        await asyncio.sleep(0.03)
        await lag.stop()
        return lag

    lag = asyncio.run(scenario())
    assert lag.max_s >= 0.1 and lag.stalls >= 1
