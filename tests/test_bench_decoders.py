"""scripts/bench_cameras.py --cpu (CPU ms per frame by thread group, per camera decoder setting) and
scripts/bench_deblocking.py (what PyAV and skip_deblocking change in the detector's output), in small: their
plumbing on a real agent, real Mosquitto and real video, not their numbers."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parent.parent / "scripts"

pytest.importorskip("av", reason="PyAV (the video extra) is not installed")


def run(script: str, *args: str, timeout: float = 280) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_an_unknown_decoder_setting_is_refused_with_the_known_ones() -> None:
    proc = run("bench_cameras.py", "--cpu", "2", "--settings", "opencv", "gstreamer", timeout=120)
    assert proc.returncode == 2
    assert ("--settings: unknown gstreamer; expected some of opencv, pyav, pyav-skip-deblocking, "
            "pyav-frame-threads") in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_cpu_comparison_prints_every_group_and_the_ratio() -> None:
    proc = run("bench_cameras.py", "--cpu", "1", "--seconds", "3", "--rounds", "1", "--size", "320x240",
               "--codec", "mjpg", "--settings", "opencv", "pyav")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("opencv", "pyav"):
        assert re.search(rf"^  {name}\s+capture +\d+\.\d\d  model +\d+\.\d\d  prepare +\d+\.\d\d  publish +\d+\.\d\d"
                         r"  other +\d+\.\d\d  \| total +\d+\.\d\d", proc.stdout, re.M), proc.stdout
    assert re.search(r"total / opencv: pyav \d+\.\d\dx", proc.stdout), proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_deblocking_bench_compares_boxes_and_verdicts() -> None:
    proc = run("bench_deblocking.py", "--frames", "12", "--size", "320x240", "--rounds", "1")
    if proc.returncode != 0 and "needs /usr/bin/python3" in proc.stderr:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"pyav \(first\) against opencv \(second\):\n  pixels: mean \|difference\| 0\.000, largest 0\n"
                     r"  boxes: matched \d+, only the first 0, only the second 0.*\n  verdicts: 12 of 12 agree",
                     proc.stdout), proc.stdout
    assert re.search(r"pyav, deblocking skipped \(first\) against pyav \(second\):\n  pixels: .*\n  boxes: .*\n"
                     r"  verdicts: \d+ of 12 agree", proc.stdout), proc.stdout
    assert re.search(r"CPU against pyav: opencv \d+\.\d\dx, pyav 1\.00x, pyav, deblocking skipped \d+\.\d\dx",
                     proc.stdout), proc.stdout


@pytest.mark.timeout(120)
def test_the_conversion_bench_prints_every_way_against_todays() -> None:
    proc = run("bench_swscale.py", "--frames", "20", "--size", "640x480", "--codec", "mjpg", timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"640x480 mjpeg, 20 frames, model input 320x256 \(window 320x240\)", proc.stdout), proc.stdout
    assert re.search(r"^  today +\d+\.\d{3} +1\.00x +0\.000 +0\.0$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^  persistent +\d+\.\d{3} +\d\.\d\dx +0\.000 +0\.0$", proc.stdout, re.M), proc.stdout
    for way in ("planes", "one pass AREA", "one pass POINT"):
        assert re.search(rf"^  {way} +\d+\.\d{{3}} +\d\.\d\dx +\d+\.\d{{3}} +\d+\.\d$", proc.stdout, re.M), proc.stdout


@pytest.mark.timeout(200)
def test_the_scaling_bench_counts_changed_verdicts_and_map() -> None:
    proc = run("bench_decoder_scaling.py", "--frames", "12", "--only", "0", "--scalings", "none", "planes",
               "area+skip", timeout=190)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "conveyor 1280x960 H.264 (libx264-1280x960.mp4, 12 frames;" in proc.stdout, proc.stdout
    assert re.search(r"^  none +\d+\.\d{3} +1\.00x +(\d+) of +\1 +1\.0000 +0 \( 0\.0%\) +\d\.\d{4}$", proc.stdout,
                     re.M), proc.stdout
    assert re.search(r"^  planes +\d+\.\d{3} +\d\.\d\dx +\d+ of +\d+ +\d\.\d{4} +\d+ \( *\d+\.\d%\) +\d\.\d{4}",
                     proc.stdout, re.M), proc.stdout
    assert re.search(r"^  area\+skip +\d+\.\d{3} +\d\.\d\dx +\d+ of +\d+ ", proc.stdout, re.M), proc.stdout


def test_the_scaling_bench_refuses_an_unknown_setting_before_it_writes_a_video() -> None:
    proc = run("bench_decoder_scaling.py", "--scalings", "none", "area+fast", timeout=60)
    assert proc.returncode == 2
    assert ("--scalings: 'area+fast' is not a setting; expected one of none, planes, area, bilinear, point, "
            "fast_bilinear, bicubic, lowres, each optionally followed by +skip") in proc.stderr, proc.stderr


def test_the_ladder_refuses_an_unknown_decoder_scaling() -> None:
    proc = run("bench_cameras.py", "--ladder", "2", "--decoder-scaling", "lanczos", timeout=60)
    assert proc.returncode == 2 and "--decoder-scaling: invalid choice: 'lanczos'" in proc.stderr, proc.stderr
