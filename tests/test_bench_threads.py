"""The per-thread CPU benchmark runs the whole agent, prints CPU ms and page faults per frame by thread, and
compares two checkouts side by side; bad arguments are refused with a message."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "bench_threads.py"
REPO = SCRIPT.parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_the_agent_s_threads_with_their_cpu_and_faults_per_frame() -> None:
    proc = run("--cameras", "1", "--size", "320x240", "--codec", "mjpg", "--seconds", "1", "--rounds", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"^this checkout: \d+\.\d fps / \d+ dropped$", out, re.M), out
    assert re.search(r"^  inference\s+\d+\.\d\d\s+\d+\.\d$", out, re.M), out
    assert re.search(r"^  total\s+\d+\.\d\d$", out, re.M), out


@pytest.mark.slow
def test_two_checkouts_side_by_side_with_the_model_and_grabber_threads() -> None:
    # this checkout against itself as the baseline: one camera of small MJPG frames, one short round each
    proc = run("--cameras", "1", "--size", "320x240", "--codec", "mjpg", "--seconds", "1", "--rounds", "1",
               "--baseline", str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"^this checkout vs .*: \d+\.\d fps / \d+ dropped; baseline: \d+\.\d fps", out, re.M), out
    assert re.search(r"^  inference\s+\d+\.\d\d\s+\d+\.\d\s+\d+\.\d\d\s+\d+\.\d\s+\d+\.\d\d$", out, re.M), out
    assert re.search(r"^  total\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d$", out, re.M), out


def test_a_baseline_that_is_no_checkout_and_a_bad_size_are_refused(tmp_path: pathlib.Path) -> None:
    proc = run("--baseline", str(tmp_path))
    assert proc.returncode == 2 and "not an edge-agent checkout (no agent/__init__.py there)" in proc.stderr
    proc = run("--size", "wide")
    assert proc.returncode == 2 and "--size 'wide': expected WxH" in proc.stderr
