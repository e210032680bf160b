"""The publish-path CPU benchmark publishes paced batches through the outbox to a real Mosquitto, prints the CPU
each event cost by thread, compares two checkouts side by side, and refuses bad arguments with a message."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "bench_publish_cpu.py"
REPO = SCRIPT.parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_cpu_per_event_by_thread_against_another_checkout() -> None:
    # this checkout against itself as the baseline: one short round each, enough events that every thread's CPU
    # spans clock ticks (10 ms); a thread whose baseline read none gets "-", not a ratio
    proc = run("--rate", "200", "--seconds", "1", "--rounds", "1", "--baseline", str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"^rates: \d+\.\d events/s; baseline \d+\.\d$", out, re.M), out
    assert "nan" not in out, out
    for thread in ("publish", "outbox-forwarder", "paho"):
        assert re.search(rf"^  {thread}\s+\d+\.\d\s+\d+\.\d\s+(\d+\.\d\d|-)$", out, re.M), out
    assert re.search(r"^  total\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d\d$", out, re.M), out


@pytest.mark.parametrize(("args", "expected"), [
    (("--rate", "0"), "must be positive"),
    (("--baseline", "/nonexistent"), "not an edge-agent checkout"),
])
def test_bad_arguments_are_refused_with_a_message(args: tuple[str, ...], expected: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
