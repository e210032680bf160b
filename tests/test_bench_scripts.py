"""The GPU benchmark's plumbing, checked on the CPU (``--cpu-smoke``: the ONNX Runtime sides on the CPU
provider, the TensorRT INT8 flavour quantized for real) and, where nothing can run, its refusal."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import onnxruntime as ort
import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "bench_gpu.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_gpu_bench_runs_its_sides_and_compares_boxes_on_the_cpu() -> None:
    proc = run("--cpu-smoke")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "calibrating the TensorRT INT8 flavour: 16/16 frames" in out
    for side in ("ort-cpu fp32", "ort-cpu int8-trt"):
        for batch in ("b1", "b8"):
            assert re.search(rf"^  {re.escape(side)}\s+{batch}\s+\d+\.\d", out, re.M), out
    assert re.search(r"ort-cpu int8-trt / ort-cpu fp32, batch 1\s+\d+\.\d\dx", out)
    same = re.search(r"ort-cpu fp32\s+matched (\d+), only ort-cpu fp32 0, only the CPU 0; IoU mean 1.0000", out)
    assert same and int(same.group(1)) > 0, out  # the FP32 side is the reference itself: every box agrees


@pytest.mark.skipif(bool({"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers())),
                    reason="this box has a GPU provider: the bench has something to run")
def test_without_a_gpu_the_bench_names_what_is_missing_and_exits_2() -> None:
    proc = run("--frames", "8")
    assert proc.returncode == 2
    assert "skipped: ort-cuda fp32: this onnxruntime has no CUDAExecutionProvider" in proc.stdout
    assert "no GPU side can run on this box" in proc.stderr and "--cpu-smoke" in proc.stderr


def test_bad_batches_are_refused_with_the_range() -> None:
    proc = run("--batches", "1", "32")
    assert proc.returncode == 2 and "--batches must be 1..16" in proc.stderr


SOAK = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "soak.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_one_minute_soak_loses_nothing_across_peer_restarts() -> None:
    """scripts/soak.py in small: every peer restarted at least once within a minute."""
    proc = subprocess.run([sys.executable, str(SOAK), "--minutes", "1", "--cameras", "2", "--fps", "10",
                           "--broker-every", "25", "--gateway-every", "30", "--rtsp-every", "20", "--warmup-s", "15",
                           "--drain-s", "10"], capture_output=True, text=True, timeout=280)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert re.search(r"peer restarts: broker 2, gateway [12], RTSP server [23]", out), out
    committed = re.search(r"tag events committed (\d+), received by the independent subscriber (\d+), "
                          r"still in the outbox (\d+), dead-lettered 0, LOST 0", out)
    assert committed and int(committed.group(1)) > 100, out
    assert "out of commit order (per camera) 0" in out, out
