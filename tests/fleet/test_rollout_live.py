"""The canary's escalation watch on a real running agent: ``edge-agent run`` (synthetic conveyor, real Mosquitto,
its /metrics and /healthz) is the canary line3-a, whose ``fleet serve`` swaps models into it live (SIGHUP through
its pid file, confirmed on /healthz); line3-b has no agent (files only).

* A model that passes the offline gate but makes the line unsure (the shipped FP32 detector with every class logit
  lowered by 1.5: the same ranking, so the same mAP50, but confident detections fall into the uncertain band, about
  0 -> 45 % of frames here) is caught by the watch: the canary rolls itself back, the agent runs the old model
  again, the rollout stops and line3-b is never asked.
* The shipped FP32 detector passes the gate and the watch on the canary, then reaches line3-b; the canary's
  retained status names it.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from agent.config.models import DEFAULT_MODEL, DEFAULT_PREFILTER
from agent.ops.control import PID_FILE_NAME, HealthProbe
from agent.prefilter.model_info import file_digest
from agent.publish.local_broker import LocalMosquitto, free_port
from agent.tooling.dataset.synth import write_synthetic_dataset
from tests.cli.test_models_cli import edge_agent
from tests.conftest import MqttCollector
from tests.fleet.boxes import KEY, make_box, serving
from tests.prefilter.model_surgery import timid_detector

REPO = pathlib.Path(__file__).resolve().parents[2]


def _wait(predicate: object, timeout: float, what: str, log: pathlib.Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; agent log:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _manifest(tmp_path: pathlib.Path, url: str, model: pathlib.Path, name: str) -> pathlib.Path:
    (tmp_path / "fleet.key").write_text(KEY.decode() + "\n")
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"broker: {{url: '{url}'}}\nsecret_file: fleet.key\n"
                    f"model: {{source: '{model}', sha256: '{file_digest(model)}'}}\nboxes: [line3-a, line3-b]\n"
                    "gate: {margin: 0.05}\nwatch: {window_s: 3, max_rise: 0.1}\n"
                    "timeouts: {reach_s: 5, canary_s: 120, box_s: 120}\n")
    return path


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_canary_watch_rolls_back_a_model_that_makes_the_line_unsure(
        tmp_path: pathlib.Path, mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector]) -> None:
    val = tmp_path / "val"
    write_synthetic_dataset(val, 1, 6, seed=21)
    timid = timid_detector(tmp_path / "timid.onnx", 1.5)
    canary, other = (make_box(tmp_path / "boxes", d, mosquitto.url) for d in ("line3-a", "line3-b"))
    port = free_port()
    with canary.config.open("a") as f:
        f.write(f"metrics: {{listen: '127.0.0.1:{port}'}}\n")
    canary.config.write_text(canary.config.read_text().replace(
        "source: 'synthetic://conveyor'", "source: 'synthetic://conveyor?seed=3&fps=15'"))
    first = {b.device: b.files() for b in (canary, other)}
    old_id = f"detector@{file_digest(DEFAULT_PREFILTER)[:12]}"
    probe = HealthProbe(f"http://127.0.0.1:{port}/healthz")
    pid_file = pathlib.Path(os.environ["STATE_DIRECTORY"]) / PID_FILE_NAME
    log = tmp_path / "agent.log"
    with log.open("w") as log_file:
        agent = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "run", "--config", str(canary.config)],
                                 stderr=log_file, cwd=REPO, env=dict(os.environ))
    try:
        _wait(lambda: pid_file.is_file() and (s := probe.read()) is not None and s.model_id == old_id, 60,
              "the agent", log)
        with serving([canary, other], mosquitto.url, val, reload={"line3-a": True}):
            proc = edge_agent("fleet", "rollout", str(_manifest(tmp_path, mosquitto.url, timid, "timid")),
                              timeout=200)
            assert proc.returncode == 1, proc.stdout + proc.stderr + log.read_text()[-2000:]
            assert "gate accepted" in proc.stdout and "watch: escalation rate" in proc.stdout, proc.stdout
            assert "rolled back" in proc.stdout and "STOPPED at the canary line3-a (refused)" in proc.stdout
            assert {b.device: b.files() for b in (canary, other)} == first  # byte for byte, both boxes
            snapshot = probe.read()
            assert snapshot is not None and snapshot.model_id == old_id  # the agent runs the old model again

            good = edge_agent("fleet", "rollout", str(_manifest(tmp_path, mosquitto.url, DEFAULT_MODEL, "good")),
                              timeout=200)
            assert good.returncode == 0, good.stdout + good.stderr + log.read_text()[-2000:]
            assert "rollout complete: 2 box(es) changed" in good.stdout
            new_id = f"detector@{file_digest(DEFAULT_MODEL)[:12]}"
            snapshot = probe.read()
            assert snapshot is not None and snapshot.model_id == new_id
            # the retained status says which model the box runs (a subscriber that comes now gets it at once)
            status = collector(mosquitto.url, "edge/line3-a/status")
            _wait(lambda: any(json.loads(m.payload).get("model", {}).get("id") == new_id for m in status.messages),
                  10, "the retained status naming the new model", log)
            assert canary.sha() == other.sha() == file_digest(DEFAULT_MODEL)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
