"""Learn mode end to end: a grey surface camera with no prefilter (``model: null``) -> real agent (sampler,
escalation thread, recorder) -> real gRPC gateway -> fake Ollama answering from the scene's ground truth ->
outbox -> real Mosquitto; then ``edge-agent dataset export --format imagefolder`` makes a classifier training
set of the plant's classes (the taxonomy's labels and ``pass``).

The VLM is simulated (a stated simulation, not a claim about LLaVA): ``TruthOracle`` answers from the truth
of the surface frame it is shown and is wrong on 5% of them (a defective frame called ``pass``, a good one a
defect), decided per frame by a seeded hash. The scene's words (scratch, pit, ...) are the VLM's; the
taxonomy maps them to the plant's labels (SURF_SCRATCH, ...), the classes of the export.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import yaml

from agent.capture.scenes import get_scene
from agent.capture.surface import SURFACE_CLASSES
from agent.config.loader import load_config
from agent.escalation.sampler import FATES, LEARN_MODEL_ID
from agent.ops.metrics import render_agent_metrics
from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_payload, validate_stats, validate_status
from agent.runtime.service import AgentService
from tests.conftest import MqttCollector
from tests.fakes.gateway import GatewayThread, gateway_config
from tests.fakes.ollama import FakeOllama
from tests.fakes.vlm_oracle import TruthOracle

FRAMES = 90  # of the surface camera, played at 10 fps: about 9 s
SEED = 5
ERROR_RATE = 0.05  # the simulated VLM is wrong on this share of the frames it is asked about
SAMPLE_PER_MINUTE = 60.0  # one frame a second on schedule
SCENE_CHANGES_PER_MINUTE = 30.0  # and at most one scene change every 2 s (burst 2): every surface frame is new
SCENE_CHANGE_BURST = 2


def canonical(word: str) -> str:
    return "SURF_" + word.upper()


def test_a_camera_with_no_prefilter_learns_from_the_vlm_and_its_records_export_as_the_plants_classes(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], tmp_path: pathlib.Path) -> None:
    stream = get_scene("surface").stream(SEED)
    frames = [stream.next_frame() for _ in range(FRAMES)]
    truths = [frozenset(d.label for d in truth.defects) for _, truth in frames]
    oracle = TruthOracle([image for image, _ in frames], truths, SURFACE_CLASSES, error_rate=ERROR_RATE, seed=3)
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump({"version": 1, "labels": [
        {"label": canonical(w), "code": f"S-{i}", "severity": "medium", "synonyms": [w]}
        for i, w in enumerate(SURFACE_CLASSES)]}))
    status = collector(mosquitto.url, "edge/box1/status")
    stats = collector(mosquitto.url, "edge/box1/stats")
    tags = collector(mosquitto.url, "edge/box1/+/tags")
    # the gateway asks about the surface line's defect kinds (its answer schema's enum)
    with FakeOllama(answer_fn=oracle) as fake, \
            GatewayThread(gateway_config(fake.url, defect_classes=list(SURFACE_CLASSES))) as gateway:
        (tmp_path / "agent.yaml").write_text(yaml.safe_dump({
            "device_id": "box1", "model": None, "taxonomy": "taxonomy.yaml",
            "cameras": [{"id": "surf", "source": f"synthetic://surface?seed={SEED}&fps=10&frames={FRAMES}",
                         "record": True}],
            "learn": {"sample_per_minute": SAMPLE_PER_MINUTE, "scene_change_bits": 12,
                      "scene_changes_per_minute": SCENE_CHANGES_PER_MINUTE, "scene_change_burst": SCENE_CHANGE_BURST},
            "mqtt": {"url": mosquitto.url, "stats_interval_s": 1}, "metrics": {"enabled": False},
            "escalation": {"gateway": gateway.address, "rate_per_camera": {"per_minute": 6000, "burst": 100}},
            "dataset": {"dir": str(tmp_path / "rec")}}))
        config = load_config(tmp_path / "agent.yaml")
        service = AgentService(config)
        started = time.monotonic()
        service.start()
        assert service.publisher.wait_connected(10.0)
        service.wait(threading.Event(), duration=60.0)  # until the camera's frames ended
        elapsed = time.monotonic() - started
        assert service.model_facts is None  # no model was loaded
        summary = service.shutdown(timeout=15.0)
    metrics = render_agent_metrics(service.snapshot(), None, True)
    learn = service.stats_document()["learn"]["surf"]

    # every frame accounted: the four fates add up to the frames read, the statuses to the frames sampled
    assert summary.cameras["surf"].frames_read == FRAMES
    assert sum(learn[f] for f in FATES) == FRAMES, learn
    sampled = learn["sampled_schedule"] + learn["sampled_scene_change"]
    assert sum(n for key, n in learn.items() if key not in FATES) == sampled, learn
    assert learn["answered"] == sampled, str(learn)  # the gateway was up throughout
    assert summary.inspected == {}  # no prefilter inspected anything
    # the sampling rate is honoured: the first frame plus one a second on schedule; scene changes within budget
    assert 2 <= learn["sampled_schedule"] <= 1 + int(elapsed * SAMPLE_PER_MINUTE / 60.0) + 1, (learn, elapsed)
    assert learn["sampled_scene_change"] <= SCENE_CHANGE_BURST + int(elapsed * SCENE_CHANGES_PER_MINUTE / 60.0) + 1
    assert learn["skipped_rate"] > 0  # every surface frame is a new scene: the budget, not the hash, held them
    for key, n in learn.items():
        assert (f'edge_agent_learn_frames_total{{camera="surf",fate="{key}"}} {float(n)}' in metrics if key in FATES
                else f'edge_agent_learn_outcomes_total{{camera="surf",status="{key}"}} {float(n)}' in metrics), key

    # only the sampled frames are published, each schema-valid, decided by the VLM, no prefilter claimed
    docs = [json.loads(m.payload) for m in tags.wait_for(sampled, timeout=10.0)]
    time.sleep(0.5)
    assert len(tags.messages) == sampled == len(docs)
    for doc in docs:
        assert validate_payload(doc) == [], doc
        assert doc["prefilter"] == {"model": LEARN_MODEL_ID, "latency_ms": 0.0}
        assert doc["decided_by"] == "vlm" and doc["escalation"]["status"] == "answered"
        for tag in doc["tags"]:  # the VLM's words, with the plant's labels beside them
            assert tag["source"] == "vlm"
            if tag["label"] in SURFACE_CLASSES:
                assert tag["canonical"] == canonical(tag["label"])
    # the verdicts are the ground truth's, but for the frames the simulated VLM got wrong
    wrong = sum(doc["verdict"] != ("defect" if truths[doc["sequence"] - 1] else "pass") for doc in docs)
    assert wrong == oracle.wrong and oracle.asked == sampled, (wrong, oracle.wrong, oracle.asked)

    # the retained status carried the learn counts, schema-valid
    learning = [json.loads(m.payload) for m in status.messages if b'"learn"' in m.payload]
    assert learning, [m.payload for m in status.messages]
    for doc in learning:
        assert validate_status(doc) == [], doc
        assert set(doc["learn"]) == {"surf"}

    # and so did the periodic stats, valid against their contract
    periodic = [json.loads(m.payload) for m in stats.messages]
    assert periodic and all(validate_stats(doc) == [] for doc in periodic), periodic[-1:]
    assert sum(periodic[-1]["learn"]["surf"][f] for f in FATES) > 0

    # the recorder kept every answered frame; the export is a classifier training set of the plant's classes
    assert service.recorder is not None
    assert service.recorder.stats().recorded["escalated"] == sampled
    out = tmp_path / "imagefolder"
    done = subprocess.run([sys.executable, "-m", "agent.cli.main", "dataset", "export", "--from", str(tmp_path / "rec"),
                           "--out", str(out), "--format", "imagefolder", "--val-fraction", "0.25", "--split-gap", "0"],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest == {"task": "classify", "names": ["pass", *sorted(canonical(w) for w in SURFACE_CLASSES)]}
    exported = collections.Counter(p.parent.name for p in out.glob("*/*/*.jpg"))
    expected = collections.Counter(
        "pass" if doc["verdict"] == "pass" else canonical(next(t["label"] for t in doc["tags"])) for doc in docs)
    assert exported == expected, (exported, expected)
    assert {p.parent.parent.name for p in out.glob("*/*/*.jpg")} <= {"train", "val"}


def test_with_the_gateway_away_the_sampled_frames_say_so_and_nothing_pretends_to_be_inspected(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], tmp_path: pathlib.Path) -> None:
    """No gateway listening: the sampled frames are published ``uncertain`` with the escalation status that says
    why (no verdict, no tags), counted by that status; nothing is recorded; skipped frames stay unpublished."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tags = collector(mosquitto.url, "edge/box1/+/tags")
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump({"version": 1, "labels": [
        {"label": canonical(w), "code": f"S-{i}", "severity": "low", "synonyms": [w]}
        for i, w in enumerate(SURFACE_CLASSES)]}))
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump({
        "device_id": "box1", "model": None, "taxonomy": "taxonomy.yaml",
        "cameras": [{"id": "surf", "source": "synthetic://surface?seed=2&fps=10&frames=40", "record": True}],
        "learn": {"sample_per_minute": 120, "scene_changes_per_minute": 0},
        "mqtt": {"url": mosquitto.url, "stats_interval_s": 0}, "metrics": {"enabled": False},
        "escalation": {"gateway": f"127.0.0.1:{port}", "publish_deadline_s": 0.5,
                       "call_deadline_s": 1.0, "rate_per_camera": {"per_minute": 6000, "burst": 100}},
        "dataset": {"dir": str(tmp_path / "rec")}}))
    service = AgentService(load_config(tmp_path / "agent.yaml"))
    service.start()
    assert service.publisher.wait_connected(10.0)
    service.wait(threading.Event(), duration=60.0)
    assert service.health is not None
    line, (_healthy, healthz) = service.health.status_line(), service.health.health_document()
    service.shutdown(timeout=15.0)
    learn = service.stats_document()["learn"]["surf"]
    sampled = learn["sampled_schedule"]
    # systemd's STATUS= line and /healthz say it too
    assert f"learn: {sampled} of 40 frames sent to the VLM" in line, line
    # (the fates were all counted when the camera ended; some outcomes may have come after the snapshot)
    assert {f: healthz["learn"]["surf"][f] for f in FATES} == {f: learn[f] for f in FATES}
    assert healthz["inspected"] == 0
    assert sum(learn[f] for f in FATES) == 40 and learn["sampled_scene_change"] == 0, learn
    assert learn.get("answered", 0) == 0 and sum(n for k, n in learn.items() if k not in FATES) == sampled, learn
    docs = [json.loads(m.payload) for m in tags.wait_for(sampled, timeout=10.0)]
    assert len(docs) == sampled >= 2 and len(tags.messages) == sampled
    for doc in docs:
        assert validate_payload(doc) == [], doc
        assert (doc["verdict"], doc["tags"], doc["decided_by"]) == ("uncertain", [], "prefilter"), doc
        assert doc["escalation"]["status"] in ("unavailable", "timeout") and doc["escalation"]["reason"], doc
    assert service.recorder is not None and service.recorder.stats().recorded["escalated"] == 0
