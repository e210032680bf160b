"""The threads around the model run nicer than the process (agent.capture.priority)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from agent.capture.priority import FEEDER_NICE, yield_to_model

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def niceness_after(steps: int | None) -> tuple[int, int, int]:
    """(the process's niceness, the thread's before, after yield_to_model(steps)) on a new thread."""
    seen: list[int] = []

    def run() -> None:
        tid = threading.get_native_id()
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))
        yield_to_model(steps)
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return os.getpriority(os.PRIO_PROCESS, os.getpid()), seen[0], seen[1]


def test_the_calling_thread_alone_becomes_nicer() -> None:
    process, before, after = niceness_after(None)
    assert after == min(19, before + FEEDER_NICE) and FEEDER_NICE > 0
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == process  # the process and its other threads keep theirs
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == process


def test_niceness_stops_at_19() -> None:
    _process, before, after = niceness_after(40)
    assert after == 19 >= before
