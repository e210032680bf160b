"""scripts/bench_input_size.py: the bare detector at each input size, side by side; a short run prints every row."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "bench_input_size.py"
INT8 = pathlib.Path(__file__).resolve().parent.parent / "models" / "conveyor-yolov8n.int8.onnx"


def test_a_short_run_prints_each_size_with_its_ratio_to_the_models_own() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--models", str(INT8), "--runtimes", "onnxruntime",
                           "--frames", "2", "--rounds", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = r"^conveyor-yolov8n\.int8\.onnx\s+int8\s+onnxruntime\s+(\d+x\d+)\s+[\d.]+\s+([\d.]+)x"
    rows = re.findall(row, proc.stdout, re.M)
    assert [size for size, _ in rows] == ["320x320", "256x320", "192x320"], proc.stdout
    assert rows[0][1] == "1.00"  # the reference is the model's own size


def test_a_size_that_is_not_a_multiple_of_32_is_refused() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "250x320"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "each side must be a positive multiple of 32" in proc.stderr
