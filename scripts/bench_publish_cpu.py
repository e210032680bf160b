#!/usr/bin/env python3
"""The CPU one tag event costs after the model, by thread: building it, the outbox, the forwarder, paho.

    python scripts/bench_publish_cpu.py [--rate 120] [--batch 4] [--seconds 10] [--rounds 3] [--baseline DIR]

What the agent's ``inference-publish`` thread does with a model batch's decided frames, paced as live cameras
pace it (``--rate`` events a second in batches of ``--batch``: 8 cameras at 15 fps, ``max_batch`` 4, by
default), without the cameras and the model: each event built from its triage (``build_event``, as the
inspector does) and the batch handed to the runtime's fan-out (``EventFanout``) in front of the outbox
(``ReliablePublisher``: one SQLite transaction a batch) and a real Mosquitto on loopback, QoS 1, every PUBACK
awaited. After a warm-up second, the CPU time (user + system) of each thread of the process is read from
``/proc/self/task/<tid>/stat`` at the start and the end of a ``--seconds`` window and divided by the events
published in it: ``publish`` (the thread building and committing events), ``outbox-forwarder``, ``paho`` (its
network thread). At the end every event must be acknowledged and the outbox empty, else the run fails.

``--baseline DIR``: the same measurement of another checkout of edge-agent (``DIR`` is its root, e.g. a
``git worktree`` of an older commit), each side in its own process, alternating round by round, medians
printed side by side with the ratio (this / baseline). The clock tick is 10 ms: a window of 10 s at 120
events/s resolves about 8 µs an event per thread. Linux only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
AGENT_DIR_ENV = "BENCH_PUBLISH_CPU_AGENT_DIR"  # where `agent` is imported from (the --baseline side sets it)
sys.path.insert(0, os.environ.get(AGENT_DIR_ENV) or str(REPO))

import agent  # noqa: E402
from agent.config.models import MqttConfig, TriageConfig  # noqa: E402
from agent.core.detections import Detection  # noqa: E402
from agent.core.event import build_event  # noqa: E402
from agent.publish.local_broker import LocalMosquitto  # noqa: E402
from agent.publish.mqtt_publisher import MqttPublisher  # noqa: E402
from agent.publish.outbox import Outbox  # noqa: E402
from agent.publish.reliable import ReliablePublisher  # noqa: E402
from agent.runtime.fanout import EventFanout  # noqa: E402
from agent.triage.policy import triage  # noqa: E402

WARM_UP_S = 1.0
CAMERAS = 8


def thread_cpu() -> dict[str, int]:
    """CPU clock ticks of this process's threads so far, by group (paho's thread: ``paho``)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, int] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = pathlib.Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        name = names.get(int(tid), "native")
        group = "paho" if name.startswith("paho-mqtt-client") else name
        out[group] = out.get(group, 0) + int(fields[11]) + int(fields[12])  # utime + stime
    return out


def publish_loop(fanout: EventFanout, rate: float, batch: int, until: float, counted: list[int]) -> None:
    """Batches of decided events at ``rate`` events a second until ``until`` (monotonic): the publishing thread."""
    detections = [Detection("scratch", 0, 0.91, (10.0, 20.0, 110.0, 220.0)),
                  Detection("dent", 1, 0.87, (300.0, 40.0, 350.0, 90.0))]
    decision = triage(detections, TriageConfig())
    period = batch / rate
    next_at = time.monotonic()
    sequence = 0
    while next_at < until:
        now = datetime.datetime.now(datetime.timezone.utc)
        events = []
        for _ in range(batch):
            sequence += 1
            events.append(build_event(device="bench", camera=f"cam{sequence % CAMERAS + 1}", sequence=sequence,
                                      captured_at=now, frame_width=1280, frame_height=960, decision=decision,
                                      model_id="conveyor-yolov8n@000000000000", prefilter_latency_ms=6.2))
        fanout.publish_events(events)
        counted[0] += batch
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))


def measure(url: str, rate: float, batch: int, seconds: float) -> dict[str, Any]:
    """One run of this side: {"rate": events/s published, "us": {thread: CPU µs per event}}."""
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-publish-cpu-") as tmp:
        publisher = ReliablePublisher(Outbox(pathlib.Path(tmp) / "outbox.sqlite"),
                                      MqttPublisher(MqttConfig(url=url), "bench"), topic_prefix="edge")
        publisher.start()
        if not publisher.wait_connected(10):
            raise SystemExit(f"not connected to {url} within 10 s")
        fanout = EventFanout(publisher)
        counted = [0]
        t_start = time.monotonic()
        thread = threading.Thread(target=publish_loop, name="publish", args=(
            fanout, rate, batch, t_start + WARM_UP_S + seconds + 0.5, counted))
        thread.start()
        time.sleep(WARM_UP_S)
        before, n0, t0 = thread_cpu(), counted[0], time.monotonic()
        time.sleep(seconds)
        after, n1, window = thread_cpu(), counted[0], time.monotonic() - t0
        thread.join()
        if not publisher.flush(30):
            raise SystemExit(f"not every event was acknowledged within 30 s: {publisher.stats()}")
        stats = publisher.stats()
        publisher.stop()
    if stats.acked < counted[0] or stats.pending:
        raise SystemExit(f"{counted[0]} events published but {stats.acked} acknowledged, {stats.pending} left")
    hz = os.sysconf("SC_CLK_TCK")
    events = max(1, n1 - n0)
    us = {name: (ticks - before.get(name, 0)) / hz * 1e6 / events for name, ticks in after.items()}
    return {"rate": events / window, "us": us}


def side(args: argparse.Namespace, url: str, agent_dir: pathlib.Path | None) -> dict[str, Any]:
    """One round of one side, in a process of its own (``agent`` imported from ``agent_dir``, else this one)."""
    argv = [sys.executable, str(pathlib.Path(__file__).resolve()), "--side-only", url, f"--rate={args.rate}",
            f"--batch={args.batch}", f"--seconds={args.seconds}"]
    env = dict(os.environ, **({AGENT_DIR_ENV: str(agent_dir)} if agent_dir is not None else {}))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"the {'baseline' if agent_dir else 'current'} side failed:\n{proc.stderr[-3000:]}")
    run: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return run


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    names = {name for run in runs for name in run["us"]}
    return {name: statistics.median(r["us"].get(name, 0.0) for r in runs) for name in names}


def report(runs: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> None:
    mine, base = medians(runs), medians(baseline) if baseline else {}
    print("rates: " + ", ".join(f"{r['rate']:.1f}" for r in runs) + " events/s"
          + ("; baseline " + ", ".join(f"{r['rate']:.1f}" for r in baseline) if baseline else ""))
    print(f"  {'thread':<20} {'µs/event':>9}" + (f" {'baseline':>9} {'ratio':>6}" if baseline else ""))
    order = sorted(set(mine) | set(base), key=lambda n: -max(mine.get(n, 0.0), base.get(n, 0.0)))
    for name in order:
        us, b_us = mine.get(name, 0.0), base.get(name, 0.0)
        if max(us, b_us) < 1.0:
            continue
        print(f"  {name:<20} {us:>9.1f}" + (f" {b_us:>9.1f} {ratio(us, b_us):>6}" if baseline else ""))
    total, b_total = sum(mine.values()), sum(base.values())
    print(f"  {'total':<20} {total:>9.1f}" + (f" {b_total:>9.1f} {ratio(total, b_total):>6}" if baseline else ""))


def ratio(value: float, baseline: float) -> str:
    """``value / baseline`` to two places, or ``-`` where the baseline read no clock tick (under 10 ms of CPU
    over its window: too short a run to compare)."""
    return f"{value / baseline:.2f}" if baseline else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=120.0, help="events a second (8 cameras at 15 fps: 120)")
    ap.add_argument("--batch", type=int, default=4, help="events a batch (model.max_batch)")
    ap.add_argument("--seconds", type=float, default=10.0, help="the measured window of one run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", type=pathlib.Path, default=None, help="another checkout's root, to compare")
    ap.add_argument("--side-only", metavar="URL", help=argparse.SUPPRESS)  # one run of one side, as JSON
    args = ap.parse_args()
    if not sys.platform.startswith("linux"):
        ap.error("per-thread counters come from /proc: Linux only")
    if args.rate <= 0 or args.batch <= 0 or args.seconds <= 0 or args.rounds <= 0:
        ap.error("--rate, --batch, --seconds and --rounds must be positive")
    if args.baseline is not None and not (args.baseline / "agent" / "__init__.py").is_file():
        ap.error(f"--baseline {args.baseline}: not an edge-agent checkout (no agent/__init__.py there)")
    if args.side_only:
        print(f"agent from {pathlib.Path(agent.__file__).parent}", file=sys.stderr)
        print(json.dumps(measure(args.side_only, args.rate, args.batch, args.seconds)))
        return 0
    print(f"{args.rate:g} events/s in batches of {args.batch}, {args.seconds:g} s x {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    runs: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    with LocalMosquitto() as broker:
        for i in range(args.rounds):  # alternating which side goes first, so load from elsewhere hits both alike
            sides = (None, args.baseline) if i % 2 == 0 else (args.baseline, None)
            for which in sides if args.baseline is not None else (None,):
                (baseline if which is not None else runs).append(side(args, broker.url, which))
    report(runs, baseline)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
