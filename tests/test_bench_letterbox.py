"""The letterbox benchmark runs, checks its two ways agree bit for bit and prints their ratio; bad sizes
are refused with a message."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "bench_letterbox.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_the_letterbox_bench_prints_both_ways_and_their_ratio() -> None:
    proc = run("--size", "200x150", "--input", "64", "--rounds", "2", "--frames", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"^  divide\s+\d+\.\d us", proc.stdout, re.M), proc.stdout
    assert re.search(r"^  lut\s+\d+\.\d us", proc.stdout, re.M), proc.stdout
    assert re.search(r"lut is \d+\.\d\dx the speed of divide; same numbers, bit for bit", proc.stdout)


def test_the_letterbox_bench_refuses_a_bad_size() -> None:
    proc = run("--size", "big")
    assert proc.returncode == 2
    assert "--size 'big': expected WxH" in proc.stderr
