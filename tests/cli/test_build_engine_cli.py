"""``edge-agent models build-engine`` as a user runs it, on a box without TensorRT: every input it
can check without a GPU is refused with exit 2 and one message saying what to do, never a traceback.
(The build itself is in tests/prefilter/test_tensorrt_gpu.py.)"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from agent.config.models import DEFAULT_MODEL, DEFAULT_PREFILTER

EDGE_AGENT = [sys.executable, "-m", "agent.cli.main", "models", "build-engine"]


def build_engine(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE_AGENT, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(("args", "message"), [
    ([str(DEFAULT_PREFILTER)], "cannot be built by TensorRT: node"),
    ([str(DEFAULT_PREFILTER)], "--flavour tensorrt"),
    ([str(DEFAULT_MODEL), "--precision", "int8"], "is not quantized (fp32)"),
    ([str(DEFAULT_MODEL), "--precision", "int4"], "--precision 'int4': expected one of auto, int8, fp16, fp32"),
    ([str(DEFAULT_MODEL), "--batch", "8:4:1"], "--batch: batch profile 8:4:1: expected 1 <= MIN <= OPT <= MAX"),
    ([str(DEFAULT_MODEL), "--batch", "four"], "expected MIN:OPT:MAX (e.g. 1:4:8) or one batch size N"),
    (["/no/such/model.onnx"], "model file /no/such/model.onnx does not exist"),
])
def test_bad_input_exits_2_with_what_to_do(args: list[str], message: str) -> None:
    proc = build_engine(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_a_bad_config_is_reported_with_its_field(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("model:\n  precision: int3\n")
    proc = build_engine(str(DEFAULT_MODEL), "--config", str(config))
    assert proc.returncode == 2 and "model.precision (line 2)" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(_has_tensorrt(), reason="tensorrt is installed here: the missing-module message cannot be seen")
def test_without_tensorrt_it_says_what_to_install(tmp_path: pathlib.Path) -> None:
    proc = build_engine(str(DEFAULT_MODEL), "--precision", "fp16", "--cache-dir", str(tmp_path / "engines"))
    assert proc.returncode == 2
    assert "needs the tensorrt Python module" in proc.stderr and "edge-agent[tensorrt]" in proc.stderr
    assert "JetPack" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "engines").exists()  # nothing written before the platform is known


def test_the_extras_never_pull_the_tensorrt_stub_or_tensorrt_11() -> None:
    import re

    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    root = pathlib.Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    every = [req for reqs in extras.values() for req in reqs]
    names = {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in every}
    assert not names & {"tensorrt", "tensorrt-cu12", "tensorrt-cu13"}  # the stubs that download at install
    for req in extras["tensorrt"]:
        if req.startswith("tensorrt"):
            assert "<11" in req, req  # TensorRT 10: the builder flags and JetPack 6's version
    assert not [r for r in extras["dev"] if r.startswith(("tensorrt", "onnxruntime-gpu", "cuda-python"))]
    assert all(re.search(r"<\d", r) for r in extras["gpu"] + extras["tensorrt"])  # every GPU wheel has a ceiling
