"""Reloading the config of a running agent (SIGHUP): the real service, the shipped model, synthetic cameras, a
real Mosquitto and a subscriber checking what went over the wire; systemd's side is a real datagram socket.

The pure part (which change applies live, which needs a restart) is tested in tests/config/test_reload.py.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent.config.loader import check_config, load_config
from agent.config.models import AgentConfig, CameraConfig, MetricsConfig, MqttConfig, TriageConfig
from agent.core.inspection import Inspection
from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_payload, validate_status
from agent.runtime.service import AgentService
from tests.conftest import MqttCollector
from tests.health.conftest import NotifyListener

REPO = pathlib.Path(__file__).resolve().parents[1]


def config_for(broker: LocalMosquitto, *cameras: CameraConfig) -> AgentConfig:
    return AgentConfig(device_id="box1", cameras=list(cameras), mqtt=MqttConfig(url=broker.url, stats_interval_s=0),
                       metrics=MetricsConfig(listen="127.0.0.1:0"))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def by_camera(messages: list) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    out: dict[str, list[dict]] = collections.defaultdict(list)  # type: ignore[type-arg]
    for m in messages:
        doc = json.loads(m.payload)
        out[doc["camera"]].append(doc)
    return out


@pytest.fixture
def service_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """The service's log records, also when an earlier test ran ``logs.configure`` (which stops propagation)."""
    monkeypatch.setattr(logging.getLogger("agent"), "propagate", True)
    caplog.set_level(logging.INFO, logger="agent.runtime.service")
    return caplog


@pytest.fixture
def notify_listener(mosquitto: LocalMosquitto, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    """$NOTIFY_SOCKET for the service (set after the module's Mosquitto started: it would notify too)."""
    with tempfile.TemporaryDirectory(prefix="sdn-") as folder:
        path = str(pathlib.Path(folder) / "notify.sock")
        listener = NotifyListener(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        try:
            yield listener
        finally:
            listener.close()


def test_reload_adds_removes_and_retunes_cameras_while_an_unchanged_one_runs_without_a_gap(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector]
) -> None:
    steady_frames = 60
    # a synthetic source is read frame by frame with back-pressure: a frame missing from its events is a gap
    steady = CameraConfig(id="steady", source=f"synthetic://conveyor?seed=2&fps=12&frames={steady_frames}")
    tuned = CameraConfig(id="tuned", source="synthetic://conveyor?seed=3&fps=8",
                         triage=TriageConfig(accept=0.05, reject=0.05))  # every detection is a trusted defect
    gone = CameraConfig(id="gone", source="synthetic://conveyor?seed=4&fps=8")
    added = CameraConfig(id="added", source="synthetic://conveyor?seed=5&fps=8")
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    status = collector(mosquitto.url, "edge/box1/status")
    inspected: list[tuple[str, int, str]] = []  # (camera, sequence, verdict) in the inference thread's order

    def cameras_in_status(cameras: list[str]) -> Callable[[], bool]:
        """True once the retained status lists exactly ``cameras``, each online."""
        def check() -> bool:
            docs = [json.loads(m.payload) for m in list(status.messages)]
            last = docs[-1].get("cameras", {}) if docs else {}
            return list(last) == cameras and all(c["state"] == "online" for c in last.values())
        return check

    def record(i: Inspection) -> None:
        inspected.append((i.frame.camera_id, i.frame.sequence, i.decision.verdict))

    service = AgentService(config_for(mosquitto, steady, tuned, gone), on_inspection=record)
    service.start()
    try:
        assert service.publisher.wait_connected(10.0)
        wait_until(lambda: any(c == "tuned" and v == "defect" for c, _, v in inspected), 30.0, "a defect on tuned")
        wait_until(lambda: sum(c == "steady" for c, _, _ in inspected) >= 10, 30.0, "10 frames of steady")
        wait_until(cameras_in_status(["steady", "tuned", "gone"]), 10.0, "the three cameras online in the status")
        grabbers = {g.camera.id: g for g in service.grabbers}

        # tuned: nothing is trusted and nothing is uncertain any more (every detection is below reject)
        new = config_for(mosquitto, steady, tuned.model_copy(update={"triage": TriageConfig(accept=1.0, reject=1.0)}),
                         added)
        result = service.reload(new)
        after = len(inspected)  # from here on every frame is inspected with the new config
        steady_at_reload = grabbers["steady"].stats().frames_read

        assert result.applied and result.plan is not None
        assert (result.plan.added, result.plan.removed, result.plan.restarted, result.plan.retuned) == (
            ("added",), ("gone",), (), ("tuned",))
        assert result.plan.needs_restart == () and not result.model_reloaded
        assert service.config == result.plan.config
        now = {g.camera.id: g for g in service.grabbers}
        assert list(now) == ["steady", "tuned", "added"]
        assert now["steady"] is grabbers["steady"] and now["tuned"] is grabbers["tuned"]  # never restarted
        assert grabbers["gone"].state == "stopped" and not grabbers["gone"].alive

        wait_until(lambda: sum(c == "tuned" for c, _, _ in inspected[after:]) >= 8, 30.0, "tuned after the reload")
        wait_until(lambda: sum(c == "added" for c, _, _ in inspected[after:]) >= 5, 30.0, "frames of added")
        # the retained status follows: gone left it, added joined it
        wait_until(cameras_in_status(["steady", "tuned", "added"]), 10.0, "the status after the reload")
        wait_until(lambda: grabbers["steady"].ended, 30.0, "steady's source to end")
        assert steady_at_reload < steady_frames, "steady ended before the reload: the test proves nothing"
    finally:
        summary = service.shutdown(timeout=10.0)

    # nothing accepted was lost: every inspected frame was published, once
    total = sum(summary.inspected.values())
    docs = by_camera(sub.wait_for(total, timeout=10.0))
    assert sum(len(d) for d in docs.values()) == total == len(inspected)
    assert summary.flushed and summary.publisher.acked == total
    # steady ran through the reload without losing a frame: 1..60, each inspected and published
    assert [d["sequence"] for d in docs["steady"]] == list(range(1, steady_frames + 1))
    assert summary.cameras["steady"].frames_read == summary.cameras["steady"].delivered == steady_frames
    # the new thresholds apply to tuned from the reload on
    assert {v for c, _, v in inspected[after:] if c == "tuned"} == {"pass"}
    # added starts at its first frame; gone stopped at the reload and every frame it gave was published
    assert [d["sequence"] for d in docs["added"]][:5] == [1, 2, 3, 4, 5]
    assert all(c != "gone" for c, _, _ in inspected[after:])
    assert len(docs["gone"]) == summary.inspected["gone"] > 0
    assert "gone" not in summary.cameras  # the summary lists the cameras that run
    for m in status.messages:
        assert validate_status(json.loads(m.payload)) == [], m.payload


BAD_CONFIGS = {
    # a YAML syntax error: line and column (the test's file has three lines before these)
    "yaml": ("cameras: [{id: belt, source: 'synthetic://conveyor'}\n", "line 5, column 1: expected ',' or ']'"),
    # a validation error, as `edge-agent config check` prints it
    "field": ("cameras:\n  - {id: belt, source: 'synthetic://conveyor?seed=5&fps=10'}\n"
              "  - id: second\n    source: 'synthetic://conveyor'\n    fps: -1\n",
              "cameras[1].fps (line 8): Input should be greater than 0 (got -1)"),
    # a model file that does not load
    "model": ("cameras: [{id: belt, source: 'synthetic://conveyor?seed=5&fps=10'}]\nmodel: {path: missing.onnx}\n",
              "missing.onnx"),
    # a camera source nobody understands
    "source": ("cameras:\n  - {id: belt, source: 'synthetic://conveyor?seed=5&fps=10'}\n"
               "  - {id: second, source: 'ftp://10.0.0.1/cam'}\n", "cameras[1].source (camera second): "),
}


def test_a_broken_config_is_refused_and_the_running_one_keeps_going(
    mosquitto: LocalMosquitto, notify_listener: NotifyListener, service_log: pytest.LogCaptureFixture,
    tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "agent.yaml"
    good = (f"device_id: box1\nmqtt: {{url: '{mosquitto.url}', stats_interval_s: 0}}\n"
            "metrics: {listen: '127.0.0.1:0'}\n")
    path.write_text(good + "cameras: [{id: belt, source: 'synthetic://conveyor?seed=5&fps=10'}]\n")
    service = AgentService(load_config(path))
    service.start()
    try:
        assert notify_listener.wait_for(lambda m: m.get("READY") == "1", 15.0) is not None
        running = service.config
        belt = service.grabbers[0]
        for name, (text, expected) in BAD_CONFIGS.items():
            path.write_text(good + text)
            before = service.loop.counters.inspected["belt"] if service.loop else 0
            sent = time.monotonic()
            service_log.clear()
            result = service.reload_file(path)

            assert not result.applied, name
            assert any(expected in p for p in result.problems), (name, result.problems)
            if name in ("yaml", "field"):  # the very lines `edge-agent config check` prints
                assert result.problems == tuple(check_config(path)), name
            # one error record saying what was refused and why
            errors = [r for r in service_log.records if r.levelno == logging.ERROR]
            assert len(errors) == 1, (name, service_log.text)
            assert errors[0].getMessage().startswith(f"config reload refused, the running config stays: {path}: ")
            assert expected in errors[0].getMessage() and getattr(errors[0], "reload", None) == "refused"
            # systemd: RELOADING=1 with the monotonic time, then READY=1 with a STATUS that says so
            reloading = notify_listener.wait_for(lambda m: m.get("RELOADING") == "1", 5.0, after=sent)
            assert reloading is not None, name
            assert abs(int(reloading[1]["MONOTONIC_USEC"]) / 1e6 - time.monotonic()) < 10.0
            ready = notify_listener.wait_for(lambda m: m.get("READY") == "1", 5.0, after=reloading[0])
            assert ready is not None and "refused, running the previous config" in ready[1]["STATUS"], name
            # the old config and its camera run on
            assert service.config is running and service.grabbers == [belt] and belt.alive
            wait_until(lambda b=before: service.loop is not None and service.loop.counters.inspected["belt"] > b + 2,
                       15.0, f"frames after the refused {name} config")

        # a good file afterwards is applied, and the refusal leaves the STATUS line
        path.write_text(good + "cameras: [{id: belt, source: 'synthetic://conveyor?seed=5&fps=10'}, "
                        "{id: belt2, source: 'synthetic://conveyor?seed=6&fps=10'}]\n")
        result = service.reload_file(path)
        assert result.applied and [g.camera.id for g in service.grabbers] == ["belt", "belt2"]
        assert service.grabbers[0] is belt
        assert service.health is not None and "refused" not in service.health.status_line()
        assert "config reloaded at" in service.health.status_line() and "added camera: belt2" in \
            service.health.status_line()
    finally:
        service.shutdown(timeout=10.0)


def test_settings_that_need_a_restart_are_reported_and_left_as_they_run(
    mosquitto: LocalMosquitto, service_log: pytest.LogCaptureFixture, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "agent.yaml"
    cameras = "cameras: [{id: belt, source: 'synthetic://conveyor?seed=5&fps=10'}]\nmetrics: {listen: '127.0.0.1:0'}\n"
    path.write_text(f"device_id: box1\nmqtt: {{url: '{mosquitto.url}', stats_interval_s: 0}}\n{cameras}")
    service = AgentService(load_config(path))
    service.start()
    try:
        path.write_text(f"device_id: box2\nmqtt: {{url: 'mqtt://127.0.0.1:1', stats_interval_s: 0}}\n{cameras}"
                        "triage: {accept: 0.9}\n")
        result = service.reload_file(path)
        assert result.applied and result.plan is not None
        assert result.plan.needs_restart == ("device_id", "mqtt.url")
        assert service.config.device_id == "box1" and service.config.mqtt.url == mosquitto.url  # as they run
        assert service.config.triage.accept == 0.9  # applied
        assert service.publisher.wait_connected(5.0)  # still on the broker it started with
        warnings = [r for r in service_log.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and warnings[0].getMessage() == (
            f"config reloaded from {path}: applied: triage.accept; needs a restart (not applied): device_id, "
            "mqtt.url; restart the agent to apply them"), service_log.text
    finally:
        service.shutdown(timeout=10.0)


def test_sighup_reloads_a_running_edge_agent(mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector],
                                             tmp_path: pathlib.Path) -> None:
    """`edge-agent run` end to end: SIGHUP adds a camera, a broken file is refused (the error in the log, READY=1
    again), SIGTERM ends it cleanly."""
    config = tmp_path / "agent.yaml"
    head = (f"device_id: hup-box\nmqtt: {{url: '{mosquitto.url}', stats_interval_s: 0}}\n"
            "metrics: {listen: '127.0.0.1:0'}\nlogging: {level: info, json: true}\n")
    one = "cameras:\n  - {id: cam1, source: 'synthetic://conveyor?seed=1&fps=8'}\n"
    config.write_text(head + one)
    sub = collector(mosquitto.url, "edge/hup-box/+/tags")
    log_path = tmp_path / "agent.log"
    with tempfile.TemporaryDirectory(prefix="sdn-") as folder:
        listener = NotifyListener(str(pathlib.Path(folder) / "notify.sock"))
        env = {**os.environ, "NOTIFY_SOCKET": str(pathlib.Path(folder) / "notify.sock")}
        with log_path.open("w") as log_file:
            agent = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "run", "--config", str(config)],
                                     env=env, stderr=log_file, cwd=REPO)
        try:
            assert listener.wait_for(lambda m: m.get("READY") == "1", 60.0) is not None, log_path.read_text()
            assert sub.wait_until(lambda m: b'"cam1"' in m.payload, 15.0)

            config.write_text(head + one + "  - {id: cam2, source: 'synthetic://conveyor?seed=2&fps=8'}\n")
            sent = time.monotonic()
            agent.send_signal(signal.SIGHUP)
            reloading = listener.wait_for(lambda m: m.get("RELOADING") == "1" and "MONOTONIC_USEC" in m, 15.0,
                                          after=sent)
            assert reloading is not None, log_path.read_text()
            ready = listener.wait_for(lambda m: m.get("READY") == "1", 15.0, after=reloading[0])
            assert ready is not None and "added camera: cam2" in ready[1]["STATUS"], ready
            assert sub.wait_until(lambda m: b'"cam2"' in m.payload, 15.0), "no event from the added camera"

            config.write_text(head + one + "  - {id: cam2, source: 'synthetic://conveyor', fps: 0}\n")
            sent = time.monotonic()
            agent.send_signal(signal.SIGHUP)
            ready = listener.wait_for(lambda m: m.get("READY") == "1", 15.0, after=sent)
            assert ready is not None and "refused" in ready[1]["STATUS"] and "cameras[1].fps (line 7)" in \
                ready[1]["STATUS"], ready
            count = len(sub.messages)
            assert len(sub.wait_for(count + 4, 15.0)) >= count + 4, "the agent stopped inspecting"

            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=30) == 0, log_path.read_text()
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait(timeout=10)
            listener.close()
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    reloads = [r for r in records if "reload" in r and r["reload"] != "started"]
    assert [r["reload"] for r in reloads] == ["applied", "refused"], reloads
    refused = reloads[1]
    assert refused["level"] == "error" and "cameras[1].fps (line 7): Input should be greater than 0 (got 0)" in \
        refused["msg"], refused


def test_the_model_is_swapped_live_and_one_that_does_not_fit_is_refused(
    mosquitto: LocalMosquitto, service_log: pytest.LogCaptureFixture, tmp_path: pathlib.Path,
    collector: Callable[..., MqttCollector]
) -> None:
    """The model file replaced on disk (same config) is reloaded on SIGHUP; the new model is loaded and checked
    beside the running one, and refused when the config does not fit it (a classifier without the pass label).
    The retained status names the running model's classes, the new ones after the swap."""
    from agent.config.models import REPO_MODELS

    model = tmp_path / "model.onnx"
    shutil.copyfile(REPO_MODELS / "conveyor-yolov8n.onnx", model)
    path = tmp_path / "agent.yaml"
    head = (f"device_id: box1\nmqtt: {{url: '{mosquitto.url}', stats_interval_s: 0}}\nmodel: {{path: model.onnx}}\n"
            "metrics: {listen: '127.0.0.1:0'}\ncameras: [{id: belt, source: 'synthetic://conveyor?seed=5&fps=10'}]\n")
    path.write_text(head)
    models: list[str] = []
    status = collector(mosquitto.url, "edge/box1/status")

    def model_in_status(task: str) -> Callable[[Any], bool]:
        return lambda m: json.loads(m.payload).get("model", {}).get("task") == task

    service = AgentService(load_config(path), on_inspection=lambda i: models.append(i.result.model_id))
    service.start()
    try:
        wait_until(lambda: len(models) >= 3, 15.0, "frames with the detector")
        detector = models[-1]
        assert status.wait_until(model_in_status("detect"), 10.0)
        shutil.copyfile(REPO_MODELS / "conveyor-resnet-cls.int8.onnx", model)  # a classifier now

        path.write_text(head + "triage: {pass_label: good}\n")
        refused = service.reload_file(path)
        assert not refused.applied
        assert refused.problems[0].startswith("triage.pass_label: 'good' is not a class of the classifier")
        count = len(models)
        wait_until(lambda: len(models) >= count + 3, 15.0, "frames after the refusal")
        assert set(models[count:]) == {detector}  # still the detector

        path.write_text(head)
        result = service.reload_file(path)
        assert result.applied and result.model_reloaded and result.plan is not None and not result.plan.changed
        assert service.model_facts is not None and service.model_facts.task == "classify"
        count = len(models)
        wait_until(lambda: len(models) >= count + 3, 15.0, "frames with the classifier")
        assert models[-1] == service.model_facts.model_id != detector and service.grabbers[0].alive
        assert status.wait_until(model_in_status("classify"), 10.0)  # republished with the new classes
        docs = [json.loads(m.payload) for m in status.messages]
        assert all(validate_status(d) == [] for d in docs)
        docs = [d for d in docs if d["state"] == "online"]  # not an earlier test's retained "offline"
        assert docs[0]["model"] == {"id": detector, "task": "detect",
                                    "classes": ["scratch", "hole", "stain", "missing"]}
        assert docs[-1]["model"] == {"id": service.model_facts.model_id, "task": "classify",
                                     "classes": ["pass", "scratch", "hole", "stain", "missing"]}
        assert any(r.getMessage().endswith(": model file changed on disk, reloaded") for r in service_log.records)
    finally:
        service.shutdown(timeout=10.0)


def test_a_reload_switches_cameras_between_the_prefilter_and_learn_mode(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector]
) -> None:
    """inspect -> one camera learns -> model: null (both learn, the model let go) -> inspect again (loaded again),
    each camera keeping its grabber; learn-mode frames go to a real gateway (fake Ollama behind it)."""
    from tests.fakes.gateway import GatewayThread, gateway_config
    from tests.fakes.ollama import FakeOllama

    sub = collector(mosquitto.url, "edge/box1/+/tags")
    cams = [{"id": c, "source": f"synthetic://conveyor?seed={i + 1}&fps=8"} for i, c in enumerate(("a", "b"))]
    with FakeOllama() as fake, GatewayThread(gateway_config(fake.url)) as gateway:
        def config(**extra: object) -> AgentConfig:
            return AgentConfig.model_validate({
                "device_id": "box1", "mqtt": {"url": mosquitto.url, "stats_interval_s": 0},
                "metrics": {"listen": "127.0.0.1:0"}, "escalation": {"gateway": gateway.address},
                "learn": {"sample_per_minute": 600}, **extra})

        service = AgentService(config(cameras=cams))
        service.start()
        try:
            grabbers = {g.camera.id: g for g in service.grabbers}
            wait_until(lambda: service.loop is not None and service.loop.counters.inspected["b"] >= 3, 20.0,
                       "camera b inspected by the model")
            assert service.model_facts is not None

            result = service.reload(config(cameras=[cams[0], {**cams[1], "mode": "learn"}]))
            assert result.applied and result.plan is not None and result.plan.retuned == ("b",)
            wait_until(lambda: service.learn_tally.snapshot()["b"]["sampled_schedule"] >= 2, 20.0,
                       "camera b sampled for the VLM")
            inspected_b = service.loop.counters.inspected["b"] if service.loop else 0
            wait_until(lambda: service.loop is not None and service.loop.counters.inspected["a"] >= 6, 20.0,
                       "camera a still inspected")
            assert service.loop is not None and service.loop.counters.inspected["b"] == inspected_b

            result = service.reload(config(cameras=cams, model=None))
            assert result.applied and service.model_facts is None
            wait_until(lambda: "a" in service.learn_tally.snapshot()
                       and service.learn_tally.snapshot()["a"]["sampled_schedule"] >= 1, 20.0, "camera a learning")

            result = service.reload(config(cameras=cams))
            assert result.applied and result.model_reloaded and service.model_facts is not None
            inspected_a = service.loop.counters.inspected["a"]
            wait_until(lambda: service.loop is not None and service.loop.counters.inspected["a"] > inspected_a + 2,
                       20.0, "camera a inspected by the model again")
            assert {g.camera.id: g for g in service.grabbers} == grabbers  # no camera was restarted
        finally:
            service.shutdown(timeout=10.0)
    learn_events = [json.loads(m.payload) for m in sub.messages
                    if json.loads(m.payload)["prefilter"]["model"] == "none:learn-mode"]
    assert learn_events and {d["camera"] for d in learn_events} == {"a", "b"}
    assert all(validate_payload(d) == [] for d in learn_events)
