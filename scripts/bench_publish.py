#!/usr/bin/env python3
"""What the outbox costs, measured side by side in one run against a private Mosquitto.

    python scripts/bench_publish.py [--events 3000]

1. Throughput, same payloads (real tag events, ~700 bytes), QoS 1, until every
   PUBACK is in:
   a. bare paho: ``client.publish`` in a loop (paho's own in-memory queue);
   b. outbox (synchronous=normal) + forwarder;
   c. outbox (synchronous=full: an fsync per commit) + forwarder.
   Printed as events/s and as the ratio to bare paho.
2. What honouring the broker's limits costs: the outbox against a broker that announces no limit
   (the size check returns at once: the outbox as it was before the limits) and against one that
   announces a Maximum Packet Size (every message's packet size is computed and checked),
   ``--rounds`` times each, alternating, medians side by side; plus the check alone, timed per
   message, as a share of the outbox's time per message. With ``--baseline REV`` (a git revision from
   before the limits, e.g. ``a0dd289~1``), also the outbox as it was then against the same limited
   broker, each side in its own process, alternating: today's outbox against the old one.
3. Replay after an outage: the broker is down while N events are committed, then
   comes back; the time from its return to the last PUBACK gives the replay rate.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
AGENT_DIR_ENV = "BENCH_PUBLISH_AGENT_DIR"  # where `agent` is imported from (a --baseline side sets it)
sys.path.insert(0, os.environ.get(AGENT_DIR_ENV) or str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from agent.config.models import MqttConfig, TriageConfig  # noqa: E402
from agent.core.detections import Detection  # noqa: E402
from agent.core.event import TagEvent, build_event  # noqa: E402
from agent.publish.local_broker import LocalMosquitto  # noqa: E402
from agent.publish.mqtt_publisher import MqttPublisher  # noqa: E402
from agent.publish.outbox import Outbox  # noqa: E402
from agent.publish.reliable import ReliablePublisher  # noqa: E402
from agent.triage.policy import triage  # noqa: E402


def make_events(n: int) -> list[TagEvent]:
    decision = triage([Detection("scratch", 0, 0.91, (10.0, 20.0, 110.0, 220.0)),
                       Detection("hole", 1, 0.42, (300.0, 40.0, 350.0, 90.0))], TriageConfig())
    now = datetime.datetime.now(datetime.timezone.utc)
    return [build_event(device="bench", camera=f"cam{i % 4}", sequence=i + 1, captured_at=now, frame_width=640,
                        frame_height=480, decision=decision, model_id="conveyor-yolov8n@000000000000",
                        prefilter_latency_ms=12.3) for i in range(n)]


def bare_paho(broker: LocalMosquitto, events: list[TagEvent]) -> float:
    payloads = [(f"edge/bench/{e.camera}/tags", e.to_json()) for e in events]
    done = threading.Event()
    acked = [0]

    def on_publish(client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        acked[0] += 1
        if acked[0] == len(payloads):
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=mqtt.MQTTv5)
    client.on_publish = on_publish
    client.max_inflight_messages_set(64)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    t0 = time.perf_counter()
    for topic, payload in payloads:
        client.publish(topic, payload, qos=1)
    if not done.wait(120):
        raise SystemExit("bare paho: not every PUBACK arrived within 120 s")
    elapsed = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return len(payloads) / elapsed


def with_outbox(url: str, events: list[TagEvent], workdir: pathlib.Path, sync: str) -> float:
    pub = ReliablePublisher(Outbox(workdir / f"{sync}.sqlite", synchronous=sync),  # type: ignore[arg-type]
                            MqttPublisher(MqttConfig(url=url), f"bench-{sync}"), topic_prefix="edge")
    pub.start()
    if not pub.wait_connected(10):
        raise SystemExit("outbox: not connected")
    t0 = time.perf_counter()
    for e in events:
        pub.publish_event(e)
    if not pub.flush(300):
        raise SystemExit(f"outbox ({sync}): not flushed within 300 s: {pub.stats()}")
    elapsed = time.perf_counter() - t0
    pub.stop()
    return len(events) / elapsed


def limit_check_cost(events: list[TagEvent], broker: LocalMosquitto, per_event_s: float) -> tuple[float, float]:
    """The size check and the refusal gate's look-up alone, per message (µs), and as a share of the outbox's
    time per message."""
    from agent.publish.refusals import RefusalGate

    mqtt = MqttPublisher(MqttConfig(url=broker.url), "bench-check")
    mqtt.start()
    if not mqtt.wait_connected(10) or mqtt.limits.max_packet_size is None:
        raise SystemExit("check: not connected to the limited broker")
    gate = RefusalGate()
    rows = [(f"edge/bench/{e.camera}/tags", len(e.to_json())) for e in events]
    t0 = time.perf_counter()
    for _ in range(10):
        for topic, size in rows:
            mqtt.oversize(topic, size, "application/json", None)
            gate.holds(topic)
    per = (time.perf_counter() - t0) / (10 * len(rows))
    mqtt.stop()
    return per * 1e6, per / per_event_s


def replay(broker: LocalMosquitto, events: list[TagEvent], workdir: pathlib.Path) -> tuple[float, float]:
    pub = ReliablePublisher(Outbox(workdir / "replay.sqlite"), MqttPublisher(MqttConfig(url=broker.url),
                                                                              "bench-replay"), topic_prefix="edge")
    pub.start()
    if not pub.wait_connected(10):
        raise SystemExit("replay: not connected")
    broker.stop()
    t0 = time.perf_counter()
    for e in events:
        pub.publish_event(e)
    commit_rate = len(events) / (time.perf_counter() - t0)
    broker.start()
    if not pub.wait_connected(30):
        raise SystemExit("replay: no reconnect")
    t1 = time.perf_counter()
    if not pub.flush(300):
        raise SystemExit(f"replay: not flushed: {pub.stats()}")
    rate = len(events) / (time.perf_counter() - t1)
    pub.stop()
    return commit_rate, rate


def against_baseline(args: argparse.Namespace, url: str, work: pathlib.Path) -> tuple[list[float], list[float]]:
    """Rates of today's outbox and of the one at ``args.baseline``, each run in its own process, alternating."""
    old = work / "baseline"
    old.mkdir()
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline, "agent"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"--baseline {args.baseline}: cannot extract agent/ from git ({exc}); expected a "
                         "revision of this repository") from exc
    today: list[float] = []
    before: list[float] = []
    for _ in range(args.rounds):
        for rates, where in ((before, old), (today, REPO)):
            proc = subprocess.run([sys.executable, __file__, "--side-only", url, "--events", str(args.events)],
                                  capture_output=True, text=True, env={**os.environ, AGENT_DIR_ENV: str(where)},
                                  timeout=600)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RATE ")), None)
            if proc.returncode != 0 or line is None:
                raise SystemExit(f"the side run from {where} failed: {proc.stderr[-2000:]}")
            rates.append(float(line.split()[1]))
    return today, before


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the limit comparison")
    ap.add_argument("--baseline", metavar="REV", help="git revision of the outbox before the limits, to compare")
    ap.add_argument("--side-only", metavar="URL", help=argparse.SUPPRESS)  # one outbox run, for --baseline
    args = ap.parse_args()
    if args.side_only:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"RATE {with_outbox(args.side_only, make_events(args.events), pathlib.Path(tmp), 'normal')}")
        return 0
    logging.basicConfig(level=logging.ERROR)  # the planned outage would log a warning
    events = make_events(args.events)
    print(f"{args.events} tag events of {len(events[0].to_json())} bytes, QoS 1, private Mosquitto on loopback")
    with LocalMosquitto() as broker, tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        bare = bare_paho(broker, events)
        normal = with_outbox(broker.url, events, work, "normal")
        full = with_outbox(broker.url, events, work, "full")
        commit_rate, replay_rate = replay(broker, events, work)
        with LocalMosquitto(extra_config=["max_packet_size 100000000"]) as limited:
            plain, checked = [], []
            for r in range(args.rounds):  # alternating, so that the machine's load falls on both alike
                plain.append(with_outbox(broker.url, events, work / f"plain{r}", "normal"))
                checked.append(with_outbox(limited.url, events, work / f"checked{r}", "normal"))
            plain_rate, checked_rate = statistics.median(plain), statistics.median(checked)
            check_us, check_share = limit_check_cost(events, limited, 1 / checked_rate)
            sides = against_baseline(args, limited.url, work) if args.baseline else None
    print(f"{'path':44} {'events/s':>10} {'vs bare paho':>13}")
    for name, rate in (("bare paho (memory only, lost on a crash)", bare),
                       ("outbox synchronous=normal (survives a crash)", normal),
                       ("outbox synchronous=full (survives power loss)", full)):
        print(f"{name:44} {rate:10.0f} {rate / bare:12.2f}x")
    print(f"\nbroker limits ({args.rounds} alternating rounds, median; outbox synchronous=normal):")
    print(f"{'path':44} {'events/s':>10} {'ratio':>13}")
    print(f"{'broker announces no limit (no check)':44} {plain_rate:10.0f} {1.0:12.2f}x")
    print(f"{'broker announces 100 MB (every size checked)':44} {checked_rate:10.0f} "
          f"{checked_rate / plain_rate:12.2f}x")
    print(f"  rounds: no limit {', '.join(f'{r:.0f}' for r in plain)}; "
          f"checked {', '.join(f'{r:.0f}' for r in checked)}")
    print(f"the check alone: {check_us:.2f} µs per message = {100 * check_share:.2f} % of the outbox's "
          f"{1e6 / checked_rate:.0f} µs per message")
    if sides is not None:
        today, before = statistics.median(sides[0]), statistics.median(sides[1])
        print(f"\ntoday's outbox against the one before the limits ({args.baseline}), same broker (announcing "
              f"100 MB), each in its own process, {args.rounds} alternating rounds, median:")
        print(f"{'outbox before the limits (' + args.baseline + ')':44} {before:10.0f} {1.0:12.2f}x")
        print(f"{'outbox today (limits read and checked)':44} {today:10.0f} {today / before:12.2f}x")
        print(f"  rounds: before {', '.join(f'{r:.0f}' for r in sides[1])}; "
              f"today {', '.join(f'{r:.0f}' for r in sides[0])}")
    print(f"outage: committed {args.events} events at {commit_rate:.0f}/s with the broker down; "
          f"replayed them at {replay_rate:.0f} events/s after it came back")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
