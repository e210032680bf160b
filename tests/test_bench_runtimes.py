"""scripts/bench_pipeline.py's breakdown on both runtimes and codecs, its memory line alone (--memory), and
scripts/bench_cameras.py --ladder, in small (real agent, real Mosquitto, real video): their plumbing, not their
numbers."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parent.parent / "scripts"

pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'edge-agent[openvino]')")


def run(script: str, *args: str, timeout: float = 280) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_breakdown_times_every_stage_on_both_runtimes() -> None:
    proc = run("bench_pipeline.py", "--breakdown", "--frames", "40", "--warmup", "5", "--size", "320x240",
               "--codec", "mjpg", "--models", "models/conveyor-yolov8n.int8.onnx")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "320x240 mjpg" in proc.stdout
    for runtime in ("onnxruntime", "openvino"):
        assert re.search(rf"conveyor-yolov8n.int8.onnx\s+{runtime}\s+grab \d+\.\d\d\s+retrieve \d+\.\d\d\s+"
                         r"preprocess \d+\.\d\d\s+session.run \d+\.\d\d.*\| sum \d+\.\d\d ms", proc.stdout), proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_camera_ladder_reports_each_step_and_the_most_that_passed() -> None:
    proc = run("bench_cameras.py", "--ladder", "1", "--seconds", "2", "--size", "320x240", "--codec", "mjpg")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for runtime in ("onnxruntime", "openvino"):
        assert re.search(rf"1 cameras, {runtime}\s*: +\d+\.\d frames/s of 15, dropped \d+, capture-to-event p50 "
                         r"+\d+\.\d ms p99 +\d+\.\d ms: (pass|FAIL); load", proc.stdout), proc.stdout
    assert re.search(r"the most cameras that passed: onnxruntime \d+, openvino \d+", proc.stdout)


def test_bad_ladder_size_is_refused_with_what_was_expected() -> None:
    proc = run("bench_cameras.py", "--ladder", "2", "--size", "big", timeout=60)
    assert proc.returncode == 2 and "--size must be WIDTHxHEIGHT, e.g. 1280x960, got 'big'" in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_memory_line_alone() -> None:
    proc = run("bench_pipeline.py", "--memory", "--quick", "--frames", "40", "--warmup", "5", "--size", "320x240",
               "--models", "models/conveyor-yolov8n.int8.onnx", "--runtimes", "onnxruntime")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert re.search(r"conveyor-yolov8n.int8.onnx\s+one camera:\s+peak median +\d+\.\d MB \(rounds: [\d. ]+\), "
                     r"running +\d+\.\d MB; must be <= 300 MB: yes", proc.stdout), proc.stdout
    assert "four cameras" not in proc.stdout  # --quick leaves the four-camera round out
