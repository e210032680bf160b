"""The live-MJPEG benchmark runs both settings side by side and prints the CPU per frame of each and their
ratio; bad arguments are refused with a message."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "bench_mjpeg_skip.py"

pytest.importorskip("av", reason="PyAV (the video extra) is not installed")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_both_settings_side_by_side_with_their_ratio() -> None:
    proc = run("--size", "320x240", "--frames", "30", "--seconds", "1", "--rounds", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    number = r"\s+\d+\.\d+"
    for name in ("every packet decoded", "only kept frames decoded"):
        assert re.search(rf"^  {name}{number * 2}\s+\d+\.\d%{number * 4} %$", out, re.M), out
    assert re.search(r"^  every packet decoded\s+\S+\s+\S+\s+0\.0%", out, re.M), out  # nothing left undecoded
    assert re.search(r"^only kept / every packet: \d+\.\d\dx CPU per kept frame", out, re.M), out


@pytest.mark.parametrize(("args", "message"), [
    (("--size", "big"), "--size 'big': expected WxH"),
    (("--fps", "30", "--camera-fps", "30"), "expected less than --camera-fps 30"),
    (("--seconds", "0"), "--seconds: expected a positive number"),
    (("--video", "/nonexistent.avi"), "--video /nonexistent.avi: no such file"),
])
def test_bad_arguments_are_refused_with_a_message(args: tuple[str, ...], message: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
