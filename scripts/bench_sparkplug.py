#!/usr/bin/env python3
"""What the Sparkplug B output costs, measured side by side in one run against a private Mosquitto.

    python scripts/bench_sparkplug.py [--events 2000] [--rounds 3]

The same real tag events (4 cameras) go through the runtime's event fan-out:

a. JSON only: the outbox commit (what the inference thread waits for), then the forwarder until every PUBACK;
b. JSON + Sparkplug: the same, plus the Sparkplug listener's store commit on the same thread, then until the
   Sparkplug store is empty too (every DDATA confirmed by the SUBSCRIBE round trip).

Printed per side (medians of ``--rounds``): the caller's time per event (µs) and events/s end to end, and the
ratios b / a. Then the Sparkplug backlog replay: ``--events`` committed while the broker is down, the time from its
return to an empty store (NBIRTH, DBIRTHs, historical DDATA).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.config.models import AgentConfig, CameraConfig, MqttConfig, OutboxConfig, TriageConfig  # noqa: E402
from agent.config.sparkplug import SparkplugConfig  # noqa: E402
from agent.core.detections import Detection  # noqa: E402
from agent.core.event import TagEvent, build_event  # noqa: E402
from agent.core.ports import Published  # noqa: E402
from agent.publish.local_broker import LocalMosquitto  # noqa: E402
from agent.runtime.building import build_publisher  # noqa: E402
from agent.runtime.fanout import EventFanout  # noqa: E402
from agent.runtime.sparkplug import build_sparkplug  # noqa: E402
from agent.triage.policy import triage  # noqa: E402

CAMERAS = ("cam0", "cam1", "cam2", "cam3")


def make_events(n: int) -> list[TagEvent]:
    decision = triage([Detection("scratch", 0, 0.91, (10.0, 20.0, 110.0, 220.0)),
                       Detection("hole", 1, 0.42, (300.0, 40.0, 350.0, 90.0))], TriageConfig())
    now = datetime.datetime.now(datetime.timezone.utc)
    return [build_event(device="bench", camera=CAMERAS[i % 4], sequence=i + 1, captured_at=now, frame_width=640,
                        frame_height=480, decision=decision, model_id="conveyor-yolov8n@000000000000",
                        prefilter_latency_ms=12.3) for i in range(n)]


def config(broker: LocalMosquitto, folder: pathlib.Path, sparkplug: bool) -> AgentConfig:
    return AgentConfig(device_id="bench", cameras=[CameraConfig(id=c, source="synthetic://conveyor") for c in CAMERAS],
                       mqtt=MqttConfig(url=broker.url, stats_interval_s=0), outbox=OutboxConfig(
                           path=folder / "outbox.sqlite"),
                       sparkplug=SparkplugConfig(enabled=sparkplug, group_id="bench", edge_node_id="node1"))


def one_side(broker: LocalMosquitto, events: list[TagEvent], sparkplug: bool) -> tuple[float, float]:
    """(caller µs per event, events/s until everything is confirmed)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(broker, pathlib.Path(tmp), sparkplug)
        node = build_sparkplug(cfg)
        publisher = build_publisher(cfg)
        fanout = EventFanout(publisher, [node] if node is not None else [])
        publisher.start()
        if node is not None:
            node.start()
        if not publisher.wait_connected(10.0) or (node is not None and not node.wait_born(10.0)):
            raise SystemExit("bench_sparkplug: could not connect to the private broker")
        t0 = time.perf_counter()
        caller = 0.0
        for event in events:
            c0 = time.perf_counter()
            fanout.publish_event(event)
            caller += time.perf_counter() - c0
        done = publisher.flush(120.0) and (node is None or node.flush(120.0))
        total = time.perf_counter() - t0
        if not done:
            raise SystemExit("bench_sparkplug: not every event was confirmed within 120 s")
        publisher.stop()
        if node is not None:
            node.stop()
    return caller / len(events) * 1e6, len(events) / total


def replay(broker: LocalMosquitto, events: list[TagEvent]) -> tuple[float, float]:
    """(seconds from the broker's return to the NBIRTH (paho's reconnect backoff), events/s of the backlog from the
    NBIRTH to an empty store)."""
    with tempfile.TemporaryDirectory() as tmp:
        node = build_sparkplug(config(broker, pathlib.Path(tmp), True))
        if node is None:
            raise SystemExit("bench_sparkplug: sparkplug is off")
        broker.stop()
        node.start()
        for event in events:
            node.on_published(Published(event, 0.0, False))
        t0 = time.perf_counter()
        broker.start()
        if not node.wait_born(60.0):
            raise SystemExit("bench_sparkplug: no NBIRTH within 60 s of the broker's return")
        t1 = time.perf_counter()
        if not node.flush(120.0):
            raise SystemExit("bench_sparkplug: the backlog was not confirmed within 120 s")
        rate = len(events) / (time.perf_counter() - t1)
        node.stop()
    return t1 - t0, rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    events = make_events(args.events)
    sides: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with LocalMosquitto() as broker:
        for _ in range(args.rounds):
            for sparkplug in (False, True):  # alternating, so a busy moment hits both
                sides[sparkplug].append(one_side(broker, events, sparkplug))
        reconnect_s, rate = replay(broker, events)
    med = {k: (statistics.median(c for c, _ in v), statistics.median(r for _, r in v)) for k, v in sides.items()}
    print(f"{args.events} events, 4 cameras, medians of {args.rounds} rounds")
    print(f"  a. JSON only          caller {med[False][0]:8.1f} us/event   end to end {med[False][1]:8.0f} events/s")
    print(f"  b. JSON + Sparkplug   caller {med[True][0]:8.1f} us/event   end to end {med[True][1]:8.0f} events/s")
    print(f"  b / a                 caller {med[True][0] / med[False][0]:8.2f}x           "
          f"end to end {med[True][1] / med[False][1]:8.2f}x")
    print(f"Sparkplug backlog after a broker outage: NBIRTH {reconnect_s:.1f} s after the broker's return (reconnect "
          f"backoff), then {rate:.0f} events/s ({args.events} historical DDATA)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
