"""The ``edge-agent`` command as a user runs it: a real process, real exit codes,
messages instead of tracebacks for bad input."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import stat
import subprocess
import sys
import time

import pytest

from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_payload
from tests.conftest import VIDEO_FRAMES, MqttCollector

EDGE_AGENT = [sys.executable, "-m", "agent.cli.main"]


def edge_agent(*args: str, timeout: float = 60.0,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE_AGENT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        # an unknown key, with the allowed ones and its line
        ("mqtt:\n  url: mqtt://b:1883\n  bogus: 1\n", ["mqtt.bogus (line 3): unknown key", "topic_prefix"]),
        # a wrong type, with its line
        ("triage:\n  accept: high\n", ["triage.accept (line 2)", "(got 'high')"]),
        # a camera without a source, at the list item's line; and a bad fps two lines on
        ("cameras:\n  - id: a\n  - id: b\n    source: x.mp4\n    fps: -1\n",
         ["cameras[0].source (line 2): Field required", "cameras[1].fps (line 5)"]),
        # learn mode: no prefilter, so the frames go to the VLM, which needs a gateway
        ("model: null\ncameras:\n  - id: line3\n    source: rtsp://cam/line3\n",
         ["camera(s) line3 are in learn mode (mode: learn, or model: null)", "set escalation.gateway"]),
        # a learn setting out of range, at its line
        ("escalation: {gateway: '127.0.0.1:50061'}\ncameras:\n  - id: a\n    source: x.mp4\n    mode: learn\n"
         "    learn: {scene_change_bits: 70}\n", ["cameras[0].learn.scene_change_bits (line 6)", "(got 70)"]),
    ],
)
def test_config_check_reports_every_problem_with_its_line(tmp_path: pathlib.Path, yaml_text: str,
                                                          expected: list[str]) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml_text)
    proc = edge_agent("config", "check", str(path))
    assert proc.returncode == 1
    for text in expected:
        assert text in proc.stderr
    assert_no_traceback(proc)


def test_config_check_accepts_a_good_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("device_id: box7\ncameras:\n  - id: cam1\n    source: /dev/video0\ntriage: {accept: 0.7}\n")
    proc = edge_agent("config", "check", str(path))
    assert proc.returncode == 0 and "ok" in proc.stdout


def test_config_check_says_which_cameras_learn(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("model: null\nescalation: {gateway: '127.0.0.1:50061'}\nlearn: {sample_per_minute: 2}\n"
                    "cameras:\n  - id: line3\n    source: rtsp://cam/line3\n")
    proc = edge_agent("config", "check", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1] == (
        "  camera line3: learn mode, no prefilter: 2 frame(s)/min on schedule plus scene changes (over 12 of 63 "
        "hash bits) up to 12/min go to the VLM; the other frames are counted, not published")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # the model file is missing
        ("model: {path: missing.onnx}\n", "missing.onnx does not exist; expected an ONNX file"),
        # a model that is not an ONNX file at all
        ("model: {path: junk.onnx}\n", "could not be loaded by onnxruntime"),
        # a camera URL scheme we do not read
        ("cameras: [{id: c, source: 'ftp://cam/1'}]\n", "ftp://cam/1"),
        # an unknown key: the config error, not a traceback
        ("camera: []\n", "camera (line 1): unknown key"),
    ],
)
def test_run_refuses_bad_input_with_a_message(tmp_path: pathlib.Path, config: str, message: str) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage" * 64)
    path = tmp_path / "agent.yaml"
    path.write_text(config)
    proc = edge_agent("run", "--config", str(path), timeout=30)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.startswith("edge-agent: error:")
    assert_no_traceback(proc)


def test_run_inspects_a_video_file_and_publishes_every_frame(
    tmp_path: pathlib.Path, video_file: pathlib.Path, mosquitto: LocalMosquitto
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: box9\ncameras:\n  - id: file\n    source: {video_file}\n")
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-t", "edge/box9/+/tags",
                            "-C", str(VIDEO_FRAMES), "-W", "60", "-q", "1"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)  # let mosquitto_sub subscribe
    proc = edge_agent("run", "--config", str(path), env={"EDGE_AGENT_MQTT__URL": mosquitto.url})
    out, _ = sub.communicate(timeout=60)
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["sequence"] for d in docs] == list(range(1, VIDEO_FRAMES + 1))
    assert all(validate_payload(d) == [] for d in docs)
    assert f"inspected {VIDEO_FRAMES} frames" in proc.stderr


def test_run_in_learn_mode_says_what_became_of_every_frame(tmp_path: pathlib.Path, mosquitto: LocalMosquitto) -> None:
    """``model: null``: no prefilter; only the first frame goes to the (absent) gateway, the other 19 are skipped
    (no schedule, no scene changes), and the summary line says so."""
    import socket

    with socket.socket() as s:  # a gateway address nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: box9\nmodel: null\nescalation: {{gateway: '127.0.0.1:{port}', "
                    "publish_deadline_s: 0.5, call_deadline_s: 1}\n"
                    "learn: {sample_per_minute: 0, scene_change_bits: null}\ncameras:\n"
                    "  - id: surf\n    source: synthetic://surface?seed=1&fps=0&frames=20\n")
    proc = edge_agent("run", "--config", str(path), env={"EDGE_AGENT_MQTT__URL": mosquitto.url})
    assert proc.returncode == 0, proc.stderr
    # the published verdicts are the learning camera's (uncertain: no gateway), not the prefilter's
    assert "inspected 0 frames with the prefilter; verdicts published: {'uncertain': 1}" in proc.stderr, proc.stderr
    assert ("learn mode, camera surf: sampled_schedule 1, sampled_scene_change 0, skipped_rate 0, "
            "skipped_unchanged 19, ") in proc.stderr, proc.stderr
    assert_no_traceback(proc)


def test_run_stops_cleanly_on_sigterm_and_leaves_offline_status(mosquitto: LocalMosquitto,
                                                                 tmp_path: pathlib.Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: box3\nmqtt: {{url: '{mosquitto.url}'}}\nlogging: {{level: info}}\n"
                    f"outbox: {{path: '{tmp_path / 'outbox.sqlite'}'}}\n")
    tags = MqttCollector(mosquitto.port, "edge/box3/+/tags").start()
    proc = subprocess.Popen([*EDGE_AGENT, "run", "--config", str(path)], stderr=subprocess.PIPE, text=True)
    try:
        assert len(tags.wait_for(3, timeout=30)) == 3  # the default synthetic camera is running
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        stopped_in = time.monotonic() - signalled
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert stopped_in < 10.0  # the bound: drain, flush the outbox, publish offline
    # nothing lost: every frame the agent says it inspected reached the broker, once each
    inspected = int(re.search(r"inspected (\d+) frames", err).group(1))  # type: ignore[union-attr]
    time.sleep(0.5)
    tags.close()
    events = {json.loads(m.payload)["event_id"] for m in tags.messages}
    assert inspected >= 3 and len(events) == inspected, (inspected, len(events))
    status = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-t",
                             "edge/box3/status", "-C", "1", "-W", "5"], capture_output=True, text=True, timeout=10)
    assert json.loads(status.stdout)["state"] == "offline"
    assert_no_traceback(subprocess.CompletedProcess([], 0, "", err))


def test_demo_with_a_private_broker_shows_verdicts_and_a_summary() -> None:
    proc = edge_agent("demo", "--duration", "6", "--fps", "15", timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "private Mosquitto on mqtt://127.0.0.1:" in proc.stdout
    assert "== summary:" in proc.stdout and "verdicts:" in proc.stdout
    assert "against the scene's ground truth" in proc.stdout
    lines = [ln for ln in proc.stdout.splitlines() if " conveyor1 #" in ln]
    assert len(lines) >= 30  # about 15 fps for 6 s
    assert "mqtt: committed to the outbox" in proc.stdout and "NOT delivered" not in proc.stdout


def test_tail_shows_events_and_validates(mosquitto: LocalMosquitto) -> None:
    tail = subprocess.Popen([*EDGE_AGENT, "tail", "--broker", mosquitto.url, "--count", "5", "--validate",
                             "--timeout", "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # let it subscribe
    demo = edge_agent("demo", "--broker", mosquitto.url, "--duration", "3", "--quiet", timeout=60)
    out, err = tail.communicate(timeout=40)
    assert demo.returncode == 0, demo.stderr
    assert tail.returncode == 0, err
    lines = [ln for ln in out.splitlines() if "demo/conveyor1" in ln]
    assert len(lines) == 5 and "INVALID" not in out


def test_run_keeps_its_state_files_private_outside_systemd_too(tmp_path: pathlib.Path,
                                                               mosquitto: LocalMosquitto) -> None:
    path = tmp_path / "agent.yaml"
    state = tmp_path / "state"
    path.write_text("device_id: box9\ncameras:\n  - id: cam\n    source: synthetic://conveyor?seed=1&fps=0&frames=3\n"
                    f"outbox:\n  path: {state / 'outbox.sqlite'}\nmetrics:\n  enabled: false\n")
    # a login shell's umask, not systemd's UMask=0077
    proc = subprocess.run(["sh", "-c", 'umask 022 && exec "$@"', "sh", *EDGE_AGENT, "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "EDGE_AGENT_MQTT__URL":
                                                                           mosquitto.url})
    assert proc.returncode == 0, proc.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [state, *state.iterdir()]}
    assert modes and all(m & 0o077 == 0 for m in modes.values()), {k: oct(m) for k, m in modes.items()}
    assert "outbox.sqlite" in modes
