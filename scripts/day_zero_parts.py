"""The parts of ``scripts/day_zero.py`` (and ``scripts/live_anomaly.py``): timing steps, running ``edge-agent`` as a
user would, the plant taxonomy of the surface line, the scene's truth, the MQTT subscriber, the services
(Mosquitto, the simulated VLM, ``edge-agent gateway``) and scoring pass/defect against the truth."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
import yaml  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from agent.capture.scenes import get_scene  # noqa: E402
from agent.capture.surface import SURFACE_CLASSES  # noqa: E402
from agent.publish.local_broker import LocalMosquitto, free_port  # noqa: E402
from tests.fakes.ollama import FakeOllama  # noqa: E402
from tests.fakes.vlm_oracle import TruthOracle  # noqa: E402

DESCRIPTIONS = {
    "scratch": "a thin, long, slightly curved line, lighter or darker than the surface",
    "pit": "a small cluster of tiny dark holes",
    "stain": "a soft, low-contrast blot",
    "crack": "a jagged dark line that branches",
    "inclusion": "a broken dark streak along the rolling direction",
    "dent": "a shallow hollow, lit from one side",
}
SEVERITY = {"crack": "high", "inclusion": "high", "pit": "medium", "dent": "medium", "scratch": "low", "stain": "low"}


@dataclasses.dataclass
class Step:
    name: str
    seconds: float
    load_before: float
    load_after: float


class Steps:
    """Times each step and the load average around it."""

    def __init__(self) -> None:
        self.rows: list[Step] = []

    def run(self, name: str) -> _Timer:
        return _Timer(self, name)


class _Timer:
    def __init__(self, steps: Steps, name: str) -> None:
        self.steps, self.name = steps, name

    def __enter__(self) -> None:
        self.t0, self.load0 = time.monotonic(), os.getloadavg()[0]
        print(f"== {self.name}", flush=True)

    def __exit__(self, *exc: object) -> None:
        row = Step(self.name, time.monotonic() - self.t0, self.load0, os.getloadavg()[0])
        self.steps.rows.append(row)
        print(f"   {row.seconds:.0f} s (load {row.load_before:.1f} -> {row.load_after:.1f})", flush=True)


def edge_agent(work: pathlib.Path, *args: str, ok: tuple[int, ...] = (0,)) -> str:
    """Run ``edge-agent ARGS`` as a user would (this interpreter, this checkout); its output, or SystemExit when
    its exit code is not in ``ok``."""
    print("   $ edge-agent " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "agent.cli.main", *args], cwd=work, env=_env(work),
                          capture_output=True, text=True, timeout=3600)
    out = done.stdout + done.stderr
    if done.returncode not in ok:
        raise SystemExit(f"edge-agent {' '.join(args)} -> exit {done.returncode}\n{out[-4000:]}")
    return out


def _env(work: pathlib.Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "STATE_DIRECTORY": str(work / "state"), "YOLO_OFFLINE": "1",
            "YOLO_CONFIG_DIR": str(work / "yolo-config")}


def write_taxonomy(path: pathlib.Path) -> None:
    """The plant's taxonomy: the defect names of the line, a description each (told to the VLM)."""
    path.write_text(yaml.safe_dump({"version": 1, "line": {
        "part": "a grey metal sheet or fabric web, seen from above by a mono camera",
        "good": "an even texture (streaks, tool marks or weave) with no marks, holes or blots"},
        "labels": [{"label": name, "code": f"S-{i + 1:02d}", "severity": SEVERITY[name],
                    "description": DESCRIPTIONS[name]} for i, name in enumerate(SURFACE_CLASSES)]},
        sort_keys=False))


def scene_truths(seed: int, frames: int) -> tuple[list[Any], list[frozenset[str]]]:
    stream = get_scene("surface").stream(seed)
    images, truths = [], []
    for _ in range(frames):
        image, truth = stream.next_frame()
        images.append(image)
        truths.append(frozenset(d.label for d in truth.defects))
    return images, truths


@dataclasses.dataclass
class Collected:
    tags: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def subscribe(url: str, topic: str) -> tuple[mqtt.Client, Collected]:
    got = Collected()
    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"day-zero-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.on_subscribe = lambda *_a: ready.set()
    client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
    client.on_message = lambda _c, _u, msg: got.tags.append(json.loads(msg.payload))
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    client.connect(host, int(port))
    client.loop_start()
    if not ready.wait(10):
        raise SystemExit(f"could not subscribe to {topic} on {url}")
    return client, got


def run_agent(work: pathlib.Path, config: pathlib.Path, broker: LocalMosquitto) -> tuple[list[dict[str, Any]], str]:
    """``edge-agent run`` until its camera's frames end; the first revision of every tag event, and its output."""
    client, got = subscribe(broker.url, "edge/box1/+/tags")
    try:
        out = edge_agent(work, "run", "--config", str(config), "--log-level", "warning")
        time.sleep(1.0)  # the last acknowledged events reach the subscriber
    finally:
        client.loop_stop()
        client.disconnect()
    first = {d["event_id"]: d for d in got.tags if d.get("revision", 1) == 1}
    return list(first.values()), out


@dataclasses.dataclass(frozen=True)
class Score:
    frames: int
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    @property
    def pass_f1(self) -> float:
        return 2 * self.tn / (2 * self.tn + self.fp + self.fn) if self.tn else 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


def score(docs: Sequence[dict[str, Any]], truths: Sequence[frozenset[str]]) -> Score:
    """pass/defect against the truth of each event's frame (``sequence`` is 1-based); ``uncertain`` (no verdict:
    the VLM did not answer) counts as a miss of whatever the frame was."""
    tp = fp = fn = tn = 0
    for doc in docs:
        defect = bool(truths[doc["sequence"] - 1])
        said = doc["verdict"]
        if said == "defect":
            tp, fp = tp + defect, fp + (not defect)
        elif said == "pass":
            fn, tn = fn + defect, tn + (not defect)
        else:
            fn, fp = fn + defect, fp + (not defect)
    return Score(len(docs), tp, fp, fn, tn)


def learn_counts(out: str) -> dict[str, int]:
    match = re.search(r"^learn mode, camera line3: (.+)$", out, re.M)
    if match is None:
        raise SystemExit(f"edge-agent run printed no learn-mode counts:\n{out[-2000:]}")
    return {k: int(n) for k, n in (item.rsplit(" ", 1) for item in match[1].split(", "))}


def inspected(out: str) -> int:
    match = re.search(r"^inspected (\d+) frames", out, re.M)
    return int(match[1]) if match else 0


@dataclasses.dataclass
class Services:
    broker: LocalMosquitto
    gateway: str
    oracle: TruthOracle


@contextlib.contextmanager
def services(work: pathlib.Path, oracle: TruthOracle) -> Iterator[Services]:
    """Mosquitto, the simulated VLM (in this process) and ``edge-agent gateway`` (a process) with the taxonomy."""
    with LocalMosquitto() as broker, FakeOllama(answer_fn=oracle) as fake:
        port = free_port()
        (work / "gateway.yaml").write_text(yaml.safe_dump({
            "listen": f"127.0.0.1:{port}", "taxonomy": "taxonomy.yaml",
            "ollama": {"host": fake.url, "timeout_s": 30.0}, "summary_interval_s": 0,
            "metrics": {"enabled": False}}, sort_keys=False))
        print(f"   $ edge-agent gateway --config gateway.yaml   (Ollama: the simulated VLM at {fake.url})", flush=True)
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "gateway", "--config", "gateway.yaml"],
                                cwd=work, env=_env(work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            started = time.monotonic()
            for line in proc.stdout:
                if "listening on" in line:
                    print("   " + line.strip(), flush=True)
                    break
                if time.monotonic() - started > 60:
                    raise SystemExit("edge-agent gateway did not start within 60 s")
            else:
                raise SystemExit(f"edge-agent gateway exited with {proc.wait()}")
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
            yield Services(broker, f"127.0.0.1:{port}", oracle)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
