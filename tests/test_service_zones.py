"""Inspection zones in the whole agent: `edge-agent run` with the shipped detector on a synthetic camera whose
belt edges carry defect-like marks, a real Mosquitto and a subscriber reading the events off the wire. With an
exclude zone over each edge no event has a detection there; SIGHUP with other zones changes them between two
frames, without restarting the camera (its frame sequence goes on)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_payload
from tests.conftest import MqttCollector
from tests.health.conftest import NotifyListener

REPO = pathlib.Path(__file__).resolve().parents[1]

EDGES = """\
    zones:
      exclude:
        - {name: top-edge, points: [[0, 0], [1, 0], [1, 0.055], [0, 0.055]]}
        - {name: bottom-edge, points: [[0, 0.945], [1, 0.945], [1, 1], [0, 1]]}
"""
RIGHT = """\
    zones:
      rule: overlap
      exclude:
        - {name: right, points: [[0.5, 0], [1, 0], [1, 1], [0.5, 1]]}
"""


def centres(doc: dict) -> list[tuple[float, float]]:  # type: ignore[type-arg]
    return [((t["box"][0] + t["box"][2]) / 2, (t["box"][1] + t["box"][3]) / 2) for t in doc["tags"] if "box" in t]


def test_zones_keep_the_belt_edges_out_of_events_and_sighup_changes_them(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], tmp_path: pathlib.Path) -> None:
    config = tmp_path / "agent.yaml"
    head = (f"device_id: zone-box\nmqtt: {{url: '{mosquitto.url}', stats_interval_s: 0}}\n"
            "metrics: {listen: '127.0.0.1:0'}\nlogging: {level: info, json: true}\n"
            "cameras:\n  - id: cam1\n    source: 'synthetic://conveyor?seed=6&fps=10&edge_marks=1'\n")
    config.write_text(head + EDGES)
    sub = collector(mosquitto.url, "edge/zone-box/cam1/tags")
    log_path = tmp_path / "agent.log"
    with tempfile.TemporaryDirectory(prefix="sdn-") as folder:
        listener = NotifyListener(str(pathlib.Path(folder) / "notify.sock"))
        env = {**os.environ, "NOTIFY_SOCKET": str(pathlib.Path(folder) / "notify.sock")}
        with log_path.open("w") as log_file:
            agent = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "run", "--config", str(config)],
                                     env=env, stderr=log_file, cwd=REPO)
        try:
            assert listener.wait_for(lambda m: m.get("READY") == "1", 60.0) is not None, log_path.read_text()
            before = sub.wait_for(40, 30.0)
            assert len(before) >= 40, log_path.read_text()

            config.write_text(head + RIGHT)
            sent = time.monotonic()
            agent.send_signal(signal.SIGHUP)
            ready = listener.wait_for(lambda m: m.get("READY") == "1", 15.0, after=sent)
            assert ready is not None and "retuned camera: cam1" in ready[1]["STATUS"], ready
            count = len(sub.messages)
            assert len(sub.wait_for(count + 40, 30.0)) >= count + 40, "the agent stopped inspecting"
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=30) == 0, log_path.read_text()
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait(timeout=10)
            listener.close()
    docs = [json.loads(m.payload) for m in sub.messages]
    assert all(validate_payload(d) == [] for d in docs)
    edges = [d for d in docs if d["zones"]["exclude"] == ["top-edge", "bottom-edge"]]
    right = [d for d in docs if d["zones"]["exclude"] == ["right"]]
    assert len(edges) >= 40 and len(right) >= 30 and len(edges) + len(right) == len(docs)
    assert docs.index(right[0]) == len(edges)  # the switch happened once, between two frames
    # no restart: the camera's frame sequence went on through the reload
    assert right[0]["sequence"] == edges[-1]["sequence"] + 1
    assert all(26.4 <= y <= 453.6 for d in edges for _, y in centres(d))
    assert sum(d["zones"]["dropped"] for d in edges) > 0  # the marks were there and were dropped
    assert all(d["zones"]["rule"] == "overlap" and x <= 320 for d in right for x, _ in centres(d))
    on_edges = [y for d in right for _, y in centres(d) if y < 26.4 or y > 453.6]
    assert on_edges, "with the edge zones gone the belt-edge marks should reach the events"
