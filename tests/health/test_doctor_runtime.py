"""``doctor`` on model.runtime openvino and auto, and ``edge-agent models probe-runtime`` as a user runs it."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from agent.config.models import DEFAULT_PREFILTER, ModelConfig
from agent.ops.doctor import DoctorOptions, run_checks
from agent.publish.local_broker import LocalMosquitto
from tests.health.test_doctor import by_name, write_config

pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'edge-agent[openvino]')")


def test_doctor_on_openvino_and_on_auto(mosquitto: LocalMosquitto, tmp_path: pathlib.Path) -> None:
    engines = str(tmp_path / "engines")
    config = write_config(tmp_path, mosquitto.url, model={"runtime": "openvino", "engine_cache_dir": engines})
    checks = by_name(run_checks(DoctorOptions(config=config, timeout_s=8)))
    assert checks["model"].status == "OK" and "on OpenVINO 2026" in checks["model"].detail, checks["model"]
    assert checks["openvino"].status == "OK" and "CPU" in checks["openvino"].detail
    assert checks["onnxruntime"].status == "SKIP"
    assert checks["model threads"].status in ("OK", "WARN")

    config = write_config(tmp_path, mosquitto.url, model={"runtime": "auto", "engine_cache_dir": engines})
    row = by_name(run_checks(DoctorOptions(config=config, timeout_s=8)))["model runtime"]
    assert row.status == "OK" and row.detail.startswith("auto chose "), row
    assert "onnxruntime" in row.detail and "openvino" in row.detail and "frames/s" in row.detail


def test_probe_runtime_command_caches_what_the_agent_then_uses(tmp_path: pathlib.Path) -> None:
    from agent.prefilter.runtime_choice import read_choice

    proc = subprocess.run([sys.executable, "-m", "agent.cli.main", "models", "probe-runtime", str(DEFAULT_PREFILTER),
                           "--cache-dir", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert {ln.split()[0] for ln in lines[:2]} == {"onnxruntime", "openvino"} and "frames/s" in lines[0]
    assert lines[-1].startswith("model.runtime auto uses: ") and "probed now" in lines[-1]
    cached = read_choice(DEFAULT_PREFILTER, ModelConfig(path=DEFAULT_PREFILTER, runtime="auto",
                                                        engine_cache_dir=tmp_path))
    assert cached is not None and lines[-1].split("uses: ")[1].startswith(cached.runtime)


def test_probe_runtime_on_a_bad_file_is_one_clear_line(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"no model here")
    proc = subprocess.run([sys.executable, "-m", "agent.cli.main", "models", "probe-runtime", str(bad),
                           "--cache-dir", str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("edge-agent: error: ") and "bad.onnx" in proc.stderr
