"""scripts/bench_precision.py: bf16 against f32 on OpenVINO, a short run: both sides name what they ran in, the
agreement lines and the speed ratio are printed, and the FP32 detector's verdicts agree on the golden frames."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'edge-agent[openvino]')")

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "bench_precision.py"
FP32 = pathlib.Path(__file__).resolve().parent.parent / "models" / "conveyor-yolov8n.onnx"


def test_a_short_run_compares_bf16_with_f32_side_by_side() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--frames", "12", "--size", "640x480", "--models", str(FP32),
                           "--rounds", "1", "--seconds", "0.2", "--val", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    bf16 = "bf16" if "BF16" in out.splitlines()[0] else "f32"  # a CPU without BF16 runs f32 on the bf16 side
    assert re.search(r"f32 side OpenVINO \S+ CPU \(f32\), bf16 side OpenVINO \S+ CPU \(" + bf16 + r"\)", out), out
    assert re.search(r"golden frames: boxes matched \d+, only f32 \d+, only bf16 \d+; .*verdicts 20 of 20 agree",
                     out), out
    assert "640x480 video: boxes matched" in out and re.search(r"bf16 / f32 \d+\.\d\dx", out), out
