"""A fleet on one machine (loopback only), for tests/fleet/test_fleet.py and scripts/bench_fleet.py.

* three fake Ollama servers (tests/fakes/ollama.py) of different speeds: each answer takes a 7B vision model's
  time on one GPU (:class:`~tests.fakes.service_time.ServiceTime`: means 2, 4 and 8 s per image, each answer
  uniformly within +-50 %), multiplied by ``scale``; one request at a time each (OLLAMA_NUM_PARALLEL=1);
* two gateways, each its own ``edge-agent gateway`` process (so that one can be SIGKILLed) in front of all three
  Ollamas (``ollama.servers``, the pool: agent/gateway/pool.py), ``limits.parallel`` 3;
* one real Mosquitto;
* ``agents`` agents (AgentService, each with its own device id, synthetic conveyor camera, outbox and gRPC
  channel) in this process, naming both gateways as a list (client-side round_robin with health checking);
* an independent MQTT subscriber that counts what the broker delivers, by event_id.

At ``kill_ollama_at_s`` one Ollama stops (its open connections dropped: a call in progress breaks, later ones are
refused), at ``kill_gateway_at_s`` one gateway is SIGKILLed. After ``run_s`` the agents stop (each publishes what
it inspected) and :class:`FleetResult` says what happened.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from agent.config.models import AgentConfig
from agent.publish.local_broker import LocalMosquitto
from agent.runtime.service import AgentService, RunSummary
from tests.conftest import MqttCollector
from tests.fakes.ollama import FakeOllama
from tests.fakes.service_time import ServiceTime

_DECIDED = ("not_needed", "answered", "cached")
_STOPPED = "the agent stopped before"

__all__ = ["SERVERS", "FleetPlan", "FleetResult", "GatewayProcess", "run_fleet", "wait_for_a_call_through"]

REPO = pathlib.Path(__file__).resolve().parents[2]
SERVERS = (("ollama-fast", 2.0), ("ollama-mid", 4.0), ("ollama-slow", 8.0))
"""Each fake Ollama's name and unscaled mean seconds per image (a 7B vision model: 1 to 10 s on one GPU)."""


@dataclasses.dataclass(frozen=True)
class FleetPlan:
    agents: int = 4
    fps: float = 2.0
    run_s: float = 8.0
    scale: float = 0.05
    """Service times are the realistic ones times this (0.05: the 2 s server answers in 0.05 to 0.15 s)."""
    kill_ollama: str | None = "ollama-mid"
    kill_ollama_at_s: float = 3.0
    kill_gateway_at_s: float | None = 5.0
    publish_deadline_s: float = 2.0
    call_deadline_s: float = 4.0
    seed: int = 1
    deadline_slack_s: float = 0.5
    """A frame counts as past its deadline when its event was made later than publish_deadline_s + this after
    its capture: the publish deadline runs from the frame's inspection, and this covers the time from capture
    to inspection (the grabber's hand-over, the prefilter) on a loaded box."""


@dataclasses.dataclass
class FleetResult:
    plan: FleetPlan
    expected: int
    """Frames the agents inspected: each must be one event on the broker."""
    delivered: int
    """Distinct event_ids (revision 1) the broker delivered to the subscriber."""
    statuses: collections.Counter[str]
    answered_by: dict[str, int]
    """Chats each Ollama answered."""
    before_kill: dict[str, int]
    """Chats each Ollama had answered when one was stopped (all three up until then)."""
    alive_s: dict[str, float]
    """Seconds each Ollama was up during the run."""
    latencies_ms: list[float]
    """The escalation latency of each answered frame (the event's escalation.latency_ms)."""
    waits_s: list[float]
    """For each event: created_at - captured_at."""
    gateway_killed: bool
    in_flight_at_kill: int
    """Chats the killed gateway had in progress at an Ollama when it was killed."""
    summaries: list[RunSummary]
    reasons: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    """The escalation reasons of the frames not answered (their first 120 characters), counted."""
    marks: list[tuple[str, datetime.datetime]] = dataclasses.field(default_factory=list)
    """When the run started and each death happened (UTC)."""
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The revision-1 events delivered."""

    def phases(self) -> list[tuple[str, collections.Counter[str]]]:
        """The frames' escalation statuses by phase (from each mark to the next, by capture time)."""
        bounds = [(name, at) for name, at in self.marks]
        out: list[tuple[str, collections.Counter[str]]] = []
        for i, (name, at) in enumerate(bounds):
            until = bounds[i + 1][1] if i + 1 < len(bounds) else None
            out.append((f"from {name}", collections.Counter(
                e["escalation"]["status"] for e in self.events
                if _parse(e["captured_at"]) >= at and (until is None or _parse(e["captured_at"]) < until))))
        return out

    @property
    def past_deadline(self) -> int:
        limit = self.plan.publish_deadline_s + self.plan.deadline_slack_s
        return sum(1 for w in self.waits_s if w > limit)

    @property
    def costly(self) -> collections.Counter[str]:
        """Frames that went without an answer for another reason than the agents' stop at the end (frames still
        queued then are published unavailable, "the agent stopped before ..."): by reason."""
        return collections.Counter({r: n for r, n in self.reasons.items() if _STOPPED not in r})

    def rate(self, server: str) -> float:
        """Answers per second of the server while it was up."""
        return self.answered_by[server] / max(self.alive_s[server], 1e-9)


class GatewayProcess:
    """``edge-agent gateway`` in its own process; ``address`` once it listens."""

    def __init__(self, config: pathlib.Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "gateway", "--config", str(config)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                                               "PYTHONUNBUFFERED": "1"})
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self._listening = threading.Event()
        self.address = ""
        self._reader = threading.Thread(target=self._read, daemon=True, name="gateway-stderr")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            match = re.search(r"edge-agent gateway: listening on (\S+);", line)
            if match:
                self.address = match.group(1)
                self._listening.set()

    def wait_listening(self, timeout: float) -> str:
        if not self._listening.wait(timeout):
            self.stop()
            raise RuntimeError("a gateway did not start:\n" + "\n".join(self.lines))
        return self.address

    def kill(self) -> None:
        """SIGKILL: no graceful stop, its connections reset."""
        self.proc.kill()
        self._reap()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _gateway_config(work: pathlib.Path, index: int, fakes: dict[str, FakeOllama]) -> pathlib.Path:
    path = work / f"gateway{index}.yaml"
    servers = [{"url": fake.url, "name": name} for name, fake in fakes.items()]
    doc = {"listen": "127.0.0.1:0", "health_interval_s": 0.5, "summary_interval_s": 0, "shutdown_grace_s": 0.5,
           "ollama": {"servers": servers, "timeout_s": 30, "connect_timeout_s": 1},
           "limits": {"parallel": len(servers), "queue": 32, "per_client": 64},
           "pool": {"failure_threshold": 2, "open_s": 5}, "logging": {"level": "warning"},
           "metrics": {"enabled": False}}
    path.write_text(json.dumps(doc), encoding="utf-8")  # JSON is YAML
    return path


def _agent_config(plan: FleetPlan, work: pathlib.Path, index: int, broker: LocalMosquitto,
                  gateways: list[str]) -> AgentConfig:
    return AgentConfig.model_validate({
        "device_id": f"box{index}",
        # a wide uncertain band: most frames with a part go to the VLM (the shipped detector is sure of most)
        "cameras": [{"id": "belt", "source": f"synthetic://conveyor?seed={100 + index}&fps={plan.fps:g}",
                     "triage": {"accept": 0.95, "reject": 0.05}}],
        "mqtt": {"url": broker.url, "stats_interval_s": 0}, "metrics": {"enabled": False},
        "outbox": {"path": str(work / f"outbox{index}.sqlite")},
        "escalation": {"gateway": gateways, "publish_deadline_s": plan.publish_deadline_s,
                       "call_deadline_s": plan.call_deadline_s, "rate_per_camera": {"per_minute": 60_000,
                                                                                    "burst": 1000},
                       "dedupe": {"enabled": False}, "max_in_flight": 4, "queue_size": 16}})


def _parse(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _seconds_between(captured: str, created: str) -> float:
    return (_parse(created) - _parse(captured)).total_seconds()


@contextlib.contextmanager
def _fakes(plan: FleetPlan) -> Iterator[dict[str, FakeOllama]]:
    fakes = {name: FakeOllama(service_time=ServiceTime(mean_s, scale=plan.scale, seed=plan.seed + i)).start()
             for i, (name, mean_s) in enumerate(SERVERS)}
    try:
        yield fakes
    finally:
        for fake in fakes.values():
            fake.stop()


def _local_ports(pid: int) -> set[int]:
    """The local TCP ports of ``pid``'s sockets (from /proc: its socket inodes, /proc/net/tcp's table)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_for_a_call_through(gateway: GatewayProcess, fakes: dict[str, FakeOllama], timeout: float) -> int:
    """Wait (at most ``timeout``) until ``gateway`` has a chat in progress at some Ollama; how many it has."""
    end = time.monotonic() + timeout
    while True:
        ports = _local_ports(gateway.proc.pid)
        busy = sum(1 for fake in fakes.values() for r in fake.chat_requests()
                   if r.status == 0 and not r.disconnected and r.client is not None and r.client[1] in ports)
        if busy or time.monotonic() > end:
            return busy
        time.sleep(0.01)


def _answered(fake: FakeOllama) -> int:
    return sum(1 for r in fake.chat_requests() if r.status == 200)


def _delivered(sub: MqttCollector, expected: int, timeout: float) -> dict[str, dict[str, Any]]:
    """The revision-1 events the broker delivered, by event_id, once all ``expected`` came (or ``timeout``)."""
    end = time.monotonic() + timeout
    while True:
        docs = [json.loads(m.payload) for m in list(sub.messages)]
        first = {d["event_id"]: d for d in docs if d["revision"] == 1}
        if len(first) >= expected or time.monotonic() > end:
            return first
        time.sleep(0.1)


def run_fleet(plan: FleetPlan, work: pathlib.Path) -> FleetResult:
    """Run the fleet of the module doc by ``plan``; every process and server is stopped on return."""
    with LocalMosquitto() as broker, _fakes(plan) as fakes:
        gateways = [GatewayProcess(_gateway_config(work, i, fakes)) for i in (1, 2)]
        try:
            addresses = [gw.wait_listening(60.0) for gw in gateways]
            sub = MqttCollector(broker.url, "edge/+/+/tags").start()
            try:
                return _run(plan, work, broker, fakes, gateways, addresses, sub)
            finally:
                sub.close()
        finally:
            for gw in gateways:
                gw.stop()


def _run(plan: FleetPlan, work: pathlib.Path, broker: LocalMosquitto, fakes: dict[str, FakeOllama],
         gateways: list[GatewayProcess], addresses: list[str], sub: MqttCollector) -> FleetResult:
    agents = [AgentService(_agent_config(plan, work, i, broker, addresses)) for i in range(1, plan.agents + 1)]
    for agent in agents:
        agent.start()
    for agent in agents:
        if not agent.publisher.wait_connected(15.0):
            raise RuntimeError("an agent did not connect to the broker")
    start = time.monotonic()
    marks = [("start", _utc_now())]
    killed_at: float | None = None
    killed = False
    in_flight = 0
    before_kill: dict[str, int] = {}
    events = sorted([(plan.kill_ollama_at_s, "ollama")] if plan.kill_ollama else [])
    events += [(plan.kill_gateway_at_s, "gateway")] if plan.kill_gateway_at_s is not None else []
    try:
        for at, what in sorted(events):
            time.sleep(max(0.0, start + at - time.monotonic()))
            if what == "ollama" and plan.kill_ollama is not None:
                before_kill = {name: _answered(fake) for name, fake in fakes.items()}
                fakes[plan.kill_ollama].down()
                killed_at = time.monotonic()
                marks.append((f"{plan.kill_ollama} stopped", _utc_now()))
            else:
                in_flight = wait_for_a_call_through(gateways[1], fakes, timeout=3.0)
                gateways[1].kill()
                killed = True
                marks.append(("gateway 2 killed", _utc_now()))
        time.sleep(max(0.0, start + plan.run_s - time.monotonic()))
    finally:
        end = time.monotonic()
        summaries = [agent.shutdown(timeout=20.0) for agent in agents]
    expected = sum(sum(s.inspected.values()) for s in summaries)
    first = _delivered(sub, expected, timeout=10.0)
    alive = {name: end - start for name in fakes}
    if plan.kill_ollama is not None and killed_at is not None:
        alive[plan.kill_ollama] = killed_at - start
    return FleetResult(
        plan=plan, expected=expected, delivered=len(first),
        statuses=collections.Counter(d["escalation"]["status"] for d in first.values()),
        answered_by={name: _answered(fake) for name, fake in fakes.items()}, before_kill=before_kill,
        alive_s=alive,
        latencies_ms=sorted(float(d["escalation"]["latency_ms"]) for d in first.values()
                            if d["escalation"]["status"] == "answered" and d["escalation"]["latency_ms"] is not None),
        waits_s=[_seconds_between(d["captured_at"], d["created_at"]) for d in first.values()],
        gateway_killed=killed, in_flight_at_kill=in_flight, summaries=summaries, marks=marks,
        events=list(first.values()),
        reasons=collections.Counter(f"{d['escalation']['status']}: {(d['escalation']['reason'] or '')[:120]}"
                                    for d in first.values() if d["escalation"]["status"] not in _DECIDED))
