"""How much CPU each asyncio callback takes on the loop's thread: a measure of event-loop occupancy that a
busy machine does not change (unlike lag, which counts the time the loop's thread waits for a core).

    with LoopCpu() as cpu:
        asyncio.run(work())
    cpu.longest_ms, cpu.longest_what, cpu.total_ms, cpu.callbacks

It wraps ``asyncio.Handle._run``, through which every callback and every task step runs, timing each with
``time.thread_time`` (CPU of the running thread only: work in other threads is not counted). For tests and
``scripts/bench_loop_occupancy.py``; never in the gateway itself.

``LoopCpu(pause_gc=True)`` collects once and pauses Python's cyclic garbage collector while it measures: a
collection that happens to start inside a callback is charged to it, and its cost grows with the whole
process's heap (in a full test run, a full collection took 56 ms of one "6 MiB refused" callback that costs
under 2 ms alone). Tests use it to measure the gateway's own work; the bench measures with the collector on.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import gc
import threading
import time
from types import TracebackType
from typing import Any

__all__ = ["LoopCpu"]


class LoopCpu:
    def __init__(self, *, pause_gc: bool = False) -> None:
        self._pause_gc = pause_gc
        self._gc_was_enabled = gc.isenabled()
        self.longest_ms = 0.0
        self.longest_what = ""
        self.total_ms = 0.0
        self.callbacks = 0
        self._original: Any = None
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.longest_ms, self.longest_what, self.total_ms, self.callbacks = 0.0, "", 0.0, 0

    def __enter__(self) -> LoopCpu:
        if self._pause_gc:
            self._gc_was_enabled = gc.isenabled()
            gc.collect()
            gc.disable()
        self._original = original = asyncio.events.Handle._run
        meter = self

        def timed_run(handle: asyncio.events.Handle) -> None:
            start = time.thread_time()
            try:
                original(handle)
            finally:
                meter._add((time.thread_time() - start) * 1000.0, handle)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]
        return self

    def _add(self, ms: float, handle: asyncio.events.Handle) -> None:
        with self._lock:
            self.callbacks += 1
            self.total_ms += ms
            if ms > self.longest_ms:
                self.longest_ms, self.longest_what = ms, _what(handle)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]
        if self._pause_gc and self._gc_was_enabled:
            gc.enable()


def _what(handle: asyncio.events.Handle) -> str:
    """The callback, or the coroutine of the task that a task step resumed."""
    task = getattr(getattr(handle, "_callback", None), "__self__", None)
    coro = task.get_coro() if isinstance(task, asyncio.Task) else None
    name = getattr(coro, "__qualname__", None)
    return f"task {task.get_name()} running {name}" if name and task is not None else repr(handle)[:200]
