"""scripts/bench_nncf.py (our Q/DQ INT8 against NNCF's on OpenVINO): its refusals, and its accuracy and speed
tables on a few images and short rounds, with an IR standing in for an NNCF variant (nncf itself is not a
dependency: the quantizing step runs in the training venv)."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "bench_nncf.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


@pytest.mark.parametrize(("args", "message"), [
    # a setup is RUNSxTHREADS
    (["--setups", "2y1"], "--setups '2y1': expected RUNSxTHREADS such as 2x1 (1..8 each)"),
    (["--setups", "0x1"], "--setups '0x1': expected RUNSxTHREADS"),
    # a variant name not in the table
    (["--variants", "nncf-fast", "--skip-quantize"], "--variants nncf-fast: unknown; expected some of nncf-mixed,"),
])
def test_bad_options_are_refused_with_what_was_expected(tmp_path: pathlib.Path, args: list[str],
                                                        message: str) -> None:
    proc = run("--out", str(tmp_path), *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("nncf") is not None, reason="nncf is installed here")
def test_quantizing_without_nncf_says_where_to_run_it(tmp_path: pathlib.Path) -> None:
    proc = run("--out", str(tmp_path))
    assert proc.returncode == 2
    assert "quantizing needs nncf (Apache-2.0), which is not installed here" in proc.stderr
    assert "--skip-quantize" in proc.stderr


def test_the_tables_compare_an_ir_with_the_qdq_file(tmp_path: pathlib.Path) -> None:
    ov = pytest.importorskip("openvino")
    # the FP32 detector saved as an IR under a variant's name: the same path an NNCF IR takes
    model = ov.Core().read_model(str(REPO / "models" / "conveyor-yolov8n.onnx"))
    ov.save_model(model, str(tmp_path / "nncf-mixed.xml"), compress_to_fp16=False)
    proc = run("--out", str(tmp_path), "--skip-quantize", "--val-count", "6", "--setups", "1x1", "2x1",
               "--rounds", "2", "--seconds", "0.2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "note: 5 of the variants have no IR" in proc.stderr
    assert "accuracy: 6 held-out images" in out
    # FP32 on either runtime is the reference itself; the IR is the FP32 graph, so it passes with nothing changed
    for label in ("fp32 ov", "fp32 ort", "nncf-mixed"):
        assert re.search(rf"^{re.escape(label)}\s+\d\.\d{{4}}\s+-?0\.00\s+0/6\s+pass$", out, re.M), out
    for label in ("qdq ov", "qdq ort"):
        assert re.search(rf"^{re.escape(label)}\s+\d\.\d{{4}}\s+-?\d+\.\d\d\s+\d/6\s+(pass|REFUSED)$", out, re.M), out
    row = r"\s+\d+\.\d\s+\d+\.\d\d\s+\d\.\d{3}x\s+\d\.\d{3}x$"  # frames/s, CPU ms/frame, both ratios
    for label in ("qdq", "nncf-mixed"):
        for setup in ("1x1", "2x1"):
            assert re.search(rf"^{label}\s+{setup}" + row, out, re.M), out
    assert re.search(r"^qdq\s+2x1\s+\d+\.\d\s+\d+\.\d\d\s+1\.000x\s+1\.000x$", out, re.M), out
