#!/usr/bin/env python3
"""A bounded soak of the whole agent on this machine, with its peers failing on a schedule.

    python scripts/soak.py [--minutes 30] [--cameras 4] [--fps 15] [--broker-every 300]
                           [--gateway-every 420] [--rtsp-every 180] [--max-packet-size 20000]

Runs, each in its own process: a private Mosquitto (persistence on, ``max_packet_size`` so that
large snapshots are shrunk), the fake Ollama (tests/fakes/ollama.py) behind ``edge-agent gateway``,
a GStreamer RTSP camera (tests/capture/rtsp_server.py, system Python), and ``edge-agent run`` with
``--cameras`` synthetic cameras at ``--fps`` plus the RTSP camera, escalation on, snapshots on and
stored in the outbox. The broker is restarted (SIGTERM, start) every ``--broker-every`` seconds,
the gateway SIGKILLed and started again every ``--gateway-every``, the RTSP server every
``--rtsp-every``.

An independent subscriber (its own paho client, persistent MQTT 5 session, QoS 1) counts what the
broker delivers. What the agent committed is recorded by an SQLite trigger installed in the outbox
file before the agent starts (same transaction as the commit). At the end the chaos stops, the
agent gets ``--drain-s`` to catch up, and is stopped with SIGTERM. Printed: events committed vs
received (lost = committed - received - still pending - dead-lettered; goal 0), duplicates,
order per camera, snapshots, RSS and open file descriptors of the agent after warm-up and at the
end (goal: RSS growth under 5 %), and the outbox and dead-letter counts. Exit code 1 when an
event was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from agent.publish.local_broker import LocalMosquitto, free_port  # noqa: E402

DEVICE = "soak"
SYSTEM_PYTHON = "/usr/bin/python3"
LEDGER = """
CREATE TABLE IF NOT EXISTS soak_committed (event_id TEXT, topic TEXT, revision INTEGER);
CREATE TRIGGER IF NOT EXISTS soak_ledger AFTER INSERT ON events BEGIN
  INSERT INTO soak_committed VALUES (NEW.event_id, NEW.topic,
    CASE WHEN NEW.topic LIKE '%/tags' THEN json_extract(CAST(NEW.payload AS TEXT), '$.revision') END);
END;
"""


class Subscriber:
    """What the broker delivers, counted by (event_id, revision) for tags and event_id for snapshots."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.tags: dict[tuple[str, int], int] = {}
        self.snapshots: dict[str, int] = {}
        self.arrivals: dict[str, list[tuple[str, int]]] = {}  # camera -> first arrivals, in order
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-subscriber", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe([(f"edge/{DEVICE}/+/tags", 1),
                                                           (f"edge/{DEVICE}/+/snapshot", 1)])
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 7200  # the broker keeps our messages while we reconnect
        self.client.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            if msg.topic.endswith("/snapshot"):
                props = dict(getattr(msg.properties, "UserProperty", []) or [])
                key = props.get("event_id", "?")
                self.snapshots[key] = self.snapshots.get(key, 0) + 1
                return
            doc = json.loads(msg.payload)
            k = (doc["event_id"], int(doc.get("revision", 1)))
            self.tags[k] = self.tags.get(k, 0) + 1
            if self.tags[k] == 1:
                self.arrivals.setdefault(doc["camera"], []).append(k)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Proc:
    """A child process that can be killed and started again with the same command."""

    def __init__(self, name: str, cmd: list[str], log: pathlib.Path, ready: str | None = None) -> None:
        self.name, self.cmd, self.log, self.ready = name, cmd, log, ready
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                         start_new_session=True)
        if self.ready is not None:
            deadline = time.monotonic() + 20
            while self.ready not in self.log.read_text(errors="replace") and time.monotonic() < deadline:
                time.sleep(0.1)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(port: int, name: str) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def write_configs(work: pathlib.Path, args: argparse.Namespace, broker: LocalMosquitto, rtsp_port: int,
                  gw_port: int, ollama_port: int, metrics_port: int) -> tuple[pathlib.Path, pathlib.Path]:
    cameras = [{"id": f"syn{i}", "source": f"synthetic://conveyor?seed={i + 1}&fps={args.fps}", "fps": args.fps}
               for i in range(args.cameras)]
    cameras.append({"id": "rtsp", "source": f"rtsp://127.0.0.1:{rtsp_port}/cam", "fps": args.fps,
                    "reconnect_initial_s": 0.5, "reconnect_max_s": 2.0})
    agent = {"device_id": DEVICE, "cameras": cameras,
             "mqtt": {"url": broker.url, "stats_interval_s": 10},
             "outbox": {"path": str(work / "outbox.sqlite")},
             "escalation": {"gateway": f"127.0.0.1:{gw_port}"},
             "snapshots": {"enabled": True, "store_in_outbox": True},
             "metrics": {"enabled": True, "listen": f"127.0.0.1:{metrics_port}"},
             "logging": {"level": "warning"}}
    gateway = {"listen": f"127.0.0.1:{gw_port}", "ollama": {"host": f"http://127.0.0.1:{ollama_port}"},
               "metrics": {"listen": "127.0.0.1:0"}, "logging": {"level": "warning"}}
    agent_cfg, gw_cfg = work / "agent.yaml", work / "gateway.yaml"
    agent_cfg.write_text(json.dumps(agent))  # JSON is YAML
    gw_cfg.write_text(json.dumps(gateway))
    return agent_cfg, gw_cfg


def install_ledger(path: pathlib.Path) -> None:
    """Create the outbox (as the agent would) and the trigger that records every commit."""
    from agent.publish.outbox import Outbox

    Outbox(path).close()
    db = sqlite3.connect(str(path))
    db.executescript(LEDGER)
    db.close()


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--broker-every", type=float, default=300.0)
    ap.add_argument("--gateway-every", type=float, default=420.0)
    ap.add_argument("--rtsp-every", type=float, default=180.0)
    ap.add_argument("--max-packet-size", type=int, default=20000, help="0: no limit")
    ap.add_argument("--warmup-s", type=float, default=60.0, help="RSS/fd baseline taken this long after start")
    ap.add_argument("--drain-s", type=float, default=30.0)
    ap.add_argument("--workdir", type=pathlib.Path, default=None)
    return ap.parse_args()


def main() -> int:
    args = _args()
    work = args.workdir or pathlib.Path(tempfile.mkdtemp(prefix="edge-agent-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    extra = [f"max_packet_size {args.max_packet_size}"] if args.max_packet_size else []
    broker = LocalMosquitto(persistence=True, extra_config=extra).start()
    rtsp_port, gw_port, ollama_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    agent_cfg, gw_cfg = write_configs(work, args, broker, rtsp_port, gw_port, ollama_port, metrics_port)
    install_ledger(work / "outbox.sqlite")
    env_py = sys.executable
    ollama = Proc("ollama", [env_py, "-m", "tests.fakes.ollama", "--port", str(ollama_port)], work / "ollama.log",
                  ready="listening on")
    gateway = Proc("gateway", [env_py, "-m", "agent.cli.main", "gateway", "--config", str(gw_cfg)],
                   work / "gateway.log")
    rtsp = Proc("rtsp", [SYSTEM_PYTHON, str(REPO / "tests/capture/rtsp_server.py"), "--port", str(rtsp_port),
                         "--width", "640", "--height", "480", "--fps", str(args.fps)], work / "rtsp.log",
                ready="READY")
    agent = Proc("agent", [env_py, "-m", "agent.cli.main", "run", "--config", str(agent_cfg)], work / "agent.log")
    sub = Subscriber(broker.port)
    restarts = {"broker": 0, "gateway": 0, "rtsp": 0}
    samples: list[tuple[float, int, int]] = []
    dead_metric: float | None = None
    shrunk: tuple[float | None, float | None] = (None, None)
    try:
        for p in (ollama, gateway, rtsp, agent):
            p.start()
        print(f"soak: {args.minutes:g} min, {args.cameras} synthetic cameras at {args.fps} fps + 1 RTSP camera, "
              f"work dir {work}", flush=True)
        chaos(args, broker, gateway, rtsp, agent, sub, restarts, samples)
        time.sleep(args.drain_s)  # no more chaos: let the outbox catch up
        dead_metric = metric(metrics_port, "edge_agent_outbox_dead_letters")
        shrunk = (metric(metrics_port, "edge_agent_snapshots_shrunk_total"),
                  metric(metrics_port, "edge_agent_snapshots_too_large_total"))
        agent.kill(signal.SIGTERM, timeout=60)
        time.sleep(3)  # the subscriber takes in the last messages
    finally:
        for p in (agent, rtsp, gateway, ollama):
            p.kill(signal.SIGTERM)
        sub.close()
        broker.close()
    print(f"snapshots re-encoded smaller to fit max_packet_size {args.max_packet_size}: {shrunk[0]}, dropped as too "
          f"large: {shrunk[1]} (agent metrics)")
    return report(work, sub, samples, restarts, dead_metric)


def chaos(args: argparse.Namespace, broker: LocalMosquitto, gateway: Proc, rtsp: Proc, agent: Proc, sub: Subscriber,
          restarts: dict[str, int], samples: list[tuple[float, int, int]]) -> None:
    """Run for --minutes, restarting each peer on its schedule and sampling the agent's RSS and fds every
    minute after the warm-up (into ``restarts`` and ``samples``); return early if the agent exits."""
    assert agent.proc is not None
    pid = agent.proc.pid
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    every = {"broker": args.broker_every, "gateway": args.gateway_every, "rtsp": args.rtsp_every}
    due = {name: t0 + seconds for name, seconds in every.items()}
    next_sample = t0 + args.warmup_s
    while time.monotonic() < end:
        now = time.monotonic()
        if agent.proc.poll() is not None:
            print(f"the agent exited with {agent.proc.returncode}; see {agent.log}", flush=True)
            break
        if now >= next_sample:
            samples.append((now - t0, rss_kib(pid), open_fds(pid)))
            print(f"  t={now - t0:6.0f} s  RSS {samples[-1][1] / 1024:7.1f} MiB  fds {samples[-1][2]}  "
                  f"received {len(sub.tags)}  restarts {restarts}", flush=True)
            next_sample += 60
        for name in [n for n, when in due.items() if now >= when]:
            if name == "broker":
                broker.restart()
            else:
                peer = gateway if name == "gateway" else rtsp
                peer.kill()
                peer.start()
            restarts[name] += 1
            due[name] += every[name]
        time.sleep(0.5)
    samples.append((time.monotonic() - t0, rss_kib(pid), open_fds(pid)))


def report(work: pathlib.Path, sub: Subscriber, samples: list[tuple[float, int, int]], restarts: dict[str, int],
           dead_metric: float | None) -> int:
    db = sqlite3.connect(str(work / "outbox.sqlite"))
    commit_order = {(e, int(r)): i for i, e, r in db.execute(
        "SELECT rowid, event_id, revision FROM soak_committed WHERE topic LIKE '%/tags'")}
    committed = set(commit_order)
    snaps_committed = {e.removesuffix("/snapshot") for (e,) in db.execute(
        "SELECT event_id FROM soak_committed WHERE topic LIKE '%/snapshot'")}
    pending = {(e, json.loads(p)["revision"]) for e, p in db.execute(
        "SELECT event_id, CAST(payload AS TEXT) FROM events WHERE topic LIKE '%/tags'")}
    dead = {(e, json.loads(p)["revision"]) for e, p in db.execute(
        "SELECT event_id, CAST(payload AS TEXT) FROM dead_letters WHERE topic LIKE '%/tags'")}
    dead_causes = db.execute("SELECT cause, COUNT(*) FROM dead_letters GROUP BY cause").fetchall()
    pending_snaps = db.execute("SELECT COUNT(*) FROM events WHERE topic LIKE '%/snapshot'").fetchone()[0]
    db.close()
    received = set(sub.tags)
    lost = committed - received - pending - dead
    dups = sum(n - 1 for n in sub.tags.values())
    breaks = 0  # per camera: an event that arrived after one committed later than it
    for keys in sub.arrivals.values():
        order = [commit_order[k] for k in keys if k in commit_order]
        breaks += sum(1 for a, b in zip(order, order[1:], strict=False) if b < a)
    print("\n=== soak result ===")
    print(f"peer restarts: broker {restarts['broker']}, gateway {restarts['gateway']}, RTSP server {restarts['rtsp']}")
    print(f"tag events committed {len(committed)}, received by the independent subscriber {len(received & committed)}, "
          f"still in the outbox {len(pending)}, dead-lettered {len(dead)}, LOST {len(lost)}")
    print(f"duplicates received {dups} (at-least-once redeliveries), out of commit order (per camera) {breaks}, "
          f"received but never committed {len(received - committed)}")
    print(f"snapshots committed {len(snaps_committed)}, received {len(set(sub.snapshots) & snaps_committed)}, "
          f"still in the outbox {pending_snaps}")
    print(f"outbox at the end: {len(pending)} tag event(s) + {pending_snaps} snapshot(s) pending; dead letters "
          f"{dict(dead_causes) or 0} (metrics said {dead_metric})")
    if samples:
        (t_a, rss_a, fd_a), (t_b, rss_b, fd_b) = samples[0], samples[-1]
        growth = 100.0 * (rss_b - rss_a) / rss_a if rss_a else float("nan")
        print(f"agent RSS {rss_a / 1024:.1f} MiB at t={t_a:.0f} s -> {rss_b / 1024:.1f} MiB at t={t_b:.0f} s "
              f"({growth:+.1f} %); open fds {fd_a} -> {fd_b}")
        k = max(1, min(5, len(samples) // 3))  # RSS swings with frames in flight: compare means too
        first, last = (sum(x[1] for x in part) / len(part) for part in (samples[:k], samples[-k:]))
        print(f"agent RSS mean of the first {k} minute samples {first / 1024:.1f} MiB, of the last {k} "
              f"{last / 1024:.1f} MiB ({100 * (last - first) / first:+.1f} %); "
              f"min {min(x[1] for x in samples) / 1024:.1f}, max {max(x[1] for x in samples) / 1024:.1f} MiB")
    if lost:
        print(f"lost event ids (first 10): {sorted(lost)[:10]}")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
