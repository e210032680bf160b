"""``edge-agent doctor`` against real peers: a real Mosquitto (with and without a password), a broker
that is not there, cameras that do not exist, an INT8 model without a gate record, and a real gateway
in front of the fake Ollama (serving, and with the model missing)."""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from agent.cli.main import app
from agent.ops.doctor import Check, DoctorOptions, ask_gateway_health, render_table, run_checks
from agent.publish.local_broker import LocalMosquitto
from tests.fakes.gateway import GatewayThread, gateway_config
from tests.fakes.ollama import FakeOllama


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(folder: pathlib.Path, broker_url: str, **sections: Any) -> pathlib.Path:
    doc: dict[str, Any] = {
        "device_id": "box1",
        "cameras": [{"id": "belt", "source": "synthetic://conveyor?seed=1&fps=10"}],
        "mqtt": {"url": broker_url},
        "metrics": {"listen": "127.0.0.1:0"},
    }
    doc.update(sections)
    path = folder / "agent.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def doctor(config: pathlib.Path, *extra: str) -> tuple[int, list[dict[str, str]]]:
    result = CliRunner().invoke(app, ["doctor", "--config", str(config), "--timeout", "8", "--json", *extra])
    return result.exit_code, json.loads(result.stdout)


def test_everything_fine_exits_0(mosquitto: LocalMosquitto, tmp_path: pathlib.Path) -> None:
    code, rows = doctor(write_config(tmp_path, mosquitto.url))
    checks = {r["name"]: r for r in rows}
    assert code == 0, rows
    assert checks["config"]["status"] == "OK"
    assert checks["model"]["status"] == "OK" and "detect, 4 classes, 320x320" in checks["model"]["detail"]
    assert "(input_size auto: fitted to each camera, e.g. 1280x960 at 320x256), int8" in checks["model"]["detail"]
    assert checks["model gate"]["status"] == "OK"
    assert checks["model threads"]["status"] == "OK" and "model threads on" in checks["model threads"]["detail"]
    assert checks["onnxruntime"]["status"] == "OK" and "CPUExecutionProvider" in checks["onnxruntime"]["detail"]
    assert checks["camera belt"]["status"] == "OK" and "640x480 frame" in checks["camera belt"]["detail"]
    assert checks["mqtt"]["status"] == "OK" and "anonymously" in checks["mqtt"]["detail"]
    assert checks["gateway"]["status"] == "SKIP"


def test_missing_broker_and_bad_cameras_fail_with_what_to_do(tmp_path: pathlib.Path) -> None:
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, f"mqtt://127.0.0.1:{port}", cameras=[
        {"id": "door", "source": f"rtsp://127.0.0.1:{free_port()}/stream"},  # nothing listens
        {"id": "usb", "source": str(tmp_path / "no-such-video.avi")},  # no such file
        {"id": "belt", "source": "synthetic://conveyor?seed=1&fps=10"},  # fine
    ])
    code, rows = doctor(config)
    checks = {r["name"]: r for r in rows}
    assert code == 1
    assert checks["mqtt"]["status"] == "FAIL"
    assert f"cannot connect to 127.0.0.1:{port}: Connection refused" in checks["mqtt"]["detail"]
    assert "broker running" in checks["mqtt"]["todo"]
    assert checks["camera door"]["status"] == "FAIL" and checks["camera door"]["todo"]
    assert checks["camera usb"]["status"] == "FAIL" and "no-such-video.avi" in checks["camera usb"]["detail"]
    assert checks["camera belt"]["status"] == "OK"


def test_the_table_names_each_check_and_what_to_do(tmp_path: pathlib.Path) -> None:
    config = write_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}")
    result = CliRunner().invoke(app, ["doctor", "--config", str(config), "--timeout", "8"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    mqtt = next(i for i, line in enumerate(lines) if line.startswith("mqtt "))
    assert "FAIL" in lines[mqtt] and lines[mqtt + 1].strip().startswith("-> is the broker running")
    assert lines[-1].startswith("11 checks: 1 failed")


def test_a_bad_config_fails_first_and_alone(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("cameras:\n  - id: a\n    source: synthetic://conveyor\n    fps: -1\n")
    code, rows = doctor(path)
    assert code == 1 and [r["name"] for r in rows] == ["config"]
    assert "cameras[0].fps (line 4)" in rows[0]["detail"]


def test_password_credential_missing_then_present(tmp_path: pathlib.Path) -> None:
    """The broker requires a password; the unit reads it with LoadCredential= from a credentials folder."""
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "edge", "s3cret"], check=True, capture_output=True)
    passwords.chmod(0o600)
    with LocalMosquitto(extra_config=["allow_anonymous false", f"password_file {passwords}"]) as broker:
        config = write_config(tmp_path, broker.url, mqtt={"url": broker.url, "username": "edge",
                                                          "password_credential": "mqtt-password"})
        creds = tmp_path / "creds"
        creds.mkdir()
        code, rows = doctor(config, "--credentials-dir", str(creds))
        checks = {r["name"]: r for r in rows}
        assert code == 1 and checks["mqtt credential"]["status"] == "FAIL"
        assert "install -m 0600" in checks["mqtt credential"]["todo"]

        (creds / "mqtt-password").write_text("wrong\n")
        code, rows = doctor(config, "--credentials-dir", str(creds))
        checks = {r["name"]: r for r in rows}
        assert checks["mqtt"]["status"] == "FAIL" and "refused the connection" in checks["mqtt"]["detail"], checks

        (creds / "mqtt-password").write_text("s3cret\n")
        code, rows = doctor(config, "--credentials-dir", str(creds))
        checks = {r["name"]: r for r in rows}
        assert checks["mqtt"]["status"] == "OK" and "as edge" in checks["mqtt"]["detail"], checks


def tiny_int8_detector(path: pathlib.Path) -> pathlib.Path:
    """A real QDQ (INT8) detector graph, 32x32 input, one class, always the same output."""
    output = np.zeros((1, 5, 21), np.float32)  # 4 box rows + 1 class, 21 anchors at strides 8, 16, 32
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "scale", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["dq"]),
        helper.make_node("ReduceMean", ["dq"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["m0"]),
        helper.make_node("Add", ["const_out", "m0"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "int8", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 21])],
        initializer=[numpy_helper.from_array(output, "const_out"),
                     numpy_helper.from_array(np.zeros((), np.float32), "zero"),
                     numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
                     numpy_helper.from_array(np.array(0, np.uint8), "zp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in {"task": "detect", "names": "{0: 'scratch'}", "imgsz": "[32, 32]"}.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.save(model, str(path))
    return path


def test_int8_model_without_gate_record_warns_or_fails(mosquitto: LocalMosquitto, tmp_path: pathlib.Path) -> None:
    model = tiny_int8_detector(tmp_path / "tiny.int8.onnx")
    config = write_config(tmp_path, mosquitto.url, model={"path": str(model)})
    checks = by_name(run_checks(DoctorOptions(config=config, timeout_s=8)))
    assert checks["model"].status == "OK" and "int8" in checks["model"].detail, checks["model"]
    gate = checks["model gate"]
    assert gate.status == "WARN" and "has no accuracy gate record" in gate.detail
    assert "edge-agent models quantize" in gate.todo

    strict = write_config(tmp_path, mosquitto.url, model={"path": str(model), "require_gate": True})
    gate = by_name(run_checks(DoctorOptions(config=strict, timeout_s=8)))["model gate"]
    assert gate.status == "FAIL" and "refuses to start" in gate.detail


def test_a_model_that_is_not_onnx_fails(mosquitto: LocalMosquitto, tmp_path: pathlib.Path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not a model")
    checks = by_name(run_checks(DoctorOptions(config=write_config(tmp_path, mosquitto.url,
                                                                  model={"path": str(bogus)}), timeout_s=8)))
    assert checks["model"].status == "FAIL" and "could not be loaded by onnxruntime" in checks["model"].detail
    assert "model gate" not in checks


@pytest.fixture
def gateway() -> Iterator[tuple[FakeOllama, GatewayThread]]:
    with FakeOllama(models=("llava:7b", "moondream:latest")) as fake, GatewayThread(gateway_config(fake.url)) as gw:
        yield fake, gw


def test_gateway_health(mosquitto: LocalMosquitto, tmp_path: pathlib.Path,
                        gateway: tuple[FakeOllama, GatewayThread]) -> None:
    _fake, gw = gateway
    answer = ask_gateway_health(gw.address)
    assert answer.status == "SERVING" and answer.reason == "serving"  # and no model list: the gateway tells none

    config = write_config(tmp_path, mosquitto.url, escalation={"gateway": gw.address})
    checks = by_name(run_checks(DoctorOptions(config=config, timeout_s=8)))
    assert checks["gateway"].status == "OK" and "SERVING" in checks["gateway"].detail
    assert "ollama" not in checks


def test_learn_mode_checks_no_model(mosquitto: LocalMosquitto, tmp_path: pathlib.Path,
                                    gateway: tuple[FakeOllama, GatewayThread]) -> None:
    """``model: null``: every camera learns, no model runs, so none is loaded or checked; the gateway is."""
    _fake, gw = gateway
    config = write_config(tmp_path, mosquitto.url, model=None, escalation={"gateway": gw.address})
    checks = by_name(run_checks(DoctorOptions(config=config, timeout_s=8)))
    assert checks["model"].status == "OK" and checks["model"].detail.startswith("none: every camera is in learn mode")
    assert "model gate" not in checks and checks["gateway"].status == "OK"


def test_gateway_not_serving_says_why(mosquitto: LocalMosquitto, tmp_path: pathlib.Path) -> None:
    with FakeOllama(models=("moondream:latest",)) as fake, GatewayThread(gateway_config(fake.url)) as gw:
        config = write_config(tmp_path, mosquitto.url, escalation={"gateway": gw.address})
        checks = by_name(run_checks(DoctorOptions(config=config, timeout_s=8)))
    assert checks["gateway"].status == "FAIL"
    assert checks["gateway"].detail.endswith("NOT_SERVING: model not available")
    assert "ollama pull llava:7b" in checks["gateway"].todo and "moondream" not in checks["gateway"].detail


def test_gateway_not_running(mosquitto: LocalMosquitto, tmp_path: pathlib.Path) -> None:
    config = write_config(tmp_path, mosquitto.url, escalation={"gateway": f"127.0.0.1:{free_port()}"})
    checks = by_name(run_checks(DoctorOptions(config=config, timeout_s=3)))
    assert checks["gateway"].status == "FAIL" and "UNAVAILABLE" in checks["gateway"].detail
    assert "systemctl status edge-agent-gateway" in checks["gateway"].todo
    assert "ollama" not in checks


def test_render_table_puts_what_to_do_under_its_row() -> None:
    text = render_table([Check("config", "OK", "fine"), Check("mqtt", "FAIL", "refused", "fix the password")])
    assert text.splitlines() == ["CHECK   STATUS  DETAIL", "config  OK      fine", "mqtt    FAIL    refused",
                                 "                -> fix the password", "", "2 checks: 1 failed, 0 warning(s)"]


def test_doctor_runs_as_a_command() -> None:
    proc = subprocess.run([".venv/bin/edge-agent", "doctor", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Ollama" in proc.stdout


def test_model_threads_beyond_the_cores_are_a_warning_with_what_to_set(tmp_path: pathlib.Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.config.models import AgentConfig, ModelConfig
    from agent.ops.doctor import _model_threads_row

    monkeypatch.setattr("agent.ops.doctor.os.cpu_count", lambda: 2)
    fits = _model_threads_row(AgentConfig(model=ModelConfig(concurrent_runs=2, intra_op_threads=1)), 2)
    assert fits.status == "OK"
    assert fits.detail == "2 run(s) at once x 1 intra-op thread(s) = 2 model threads on 2 core(s)"
    over = _model_threads_row(AgentConfig(model=ModelConfig(concurrent_runs=2, intra_op_threads=2)), 2)
    assert over.status == "WARN" and "4 model threads on 2 core(s)" in over.detail
    assert "model.concurrent_runs x model.intra_op_threads to at most 2" in over.todo
    auto = _model_threads_row(AgentConfig(model=ModelConfig(concurrent_runs=2, intra_op_threads=0)), 2)
    assert auto.status == "WARN" and "x 2 intra-op thread(s)" in auto.detail  # 0: one per core, each run
    gpu = _model_threads_row(AgentConfig(model=ModelConfig(providers=["cuda", "cpu"])), 2)
    assert gpu.status == "SKIP"
