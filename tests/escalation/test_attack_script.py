"""scripts/attack_gateway.py runs its cases against a real gateway and checks its goals (slow: it starts a
gateway per case); a wrong case name is refused with the list."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "attack_gateway.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_an_unknown_case_is_refused_with_the_list() -> None:
    proc = run("--cases", "nope")
    assert proc.returncode == 2 and "unknown case(s) nope; expected some of baseline, anonymous" in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_small_attack_runs_and_reports_its_goals() -> None:
    proc = run("--cases", "anonymous,scan_bombs,agents", "--scale", "0.1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for line in ("met      RSS under 1 GB in every case", "met      the next valid call answered after every case",
                 "met      anonymous: refused", "met      agents: served"):
        assert line in out, out
