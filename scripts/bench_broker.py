#!/usr/bin/env python3
"""How many tag events one Mosquitto passes on from many boxes to a consumer, side by side in one run.

    python scripts/bench_broker.py [--boxes 1 4 16] [--events 2000] [--rounds 2]

A private Mosquitto (persistence off, as a plant broker's default); for each setting, N publisher
processes (one per box, each its own MQTT 5 session, client id and device topic, bare paho with 64 QoS 1
messages in flight: the agent's forwarder sends no faster) each publish ``--events`` real tag events
(about 700 bytes); one subscriber process on ``edge/+/+/tags`` (QoS 1, the plant's consumer) counts them.
The rate is the events the subscriber received divided by the time from the publishers' start to the last
one received: the broker's fan-in and one fan-out together; the events it never received are counted (a
subscriber that falls behind by more than Mosquitto's max_queued_messages loses the excess). The settings
alternate for ``--rounds``; the medians are printed with the ratio to the first setting.

Everything shares the machine's cores (publishers, subscriber and the single-threaded broker), so the
numbers are a floor for a broker on its own host, not its ceiling (docs/fleet.md "Capacity on paper").
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import pathlib
import statistics
import sys
import time
from multiprocessing.synchronize import Event as EventType

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from agent.config.models import TriageConfig  # noqa: E402
from agent.core.detections import Detection  # noqa: E402
from agent.core.event import build_event  # noqa: E402
from agent.publish.local_broker import LocalMosquitto  # noqa: E402
from agent.triage.policy import triage  # noqa: E402

WAIT_S = 300.0


def payloads(box: int, n: int) -> list[tuple[str, bytes]]:
    decision = triage([Detection("scratch", 0, 0.91, (10.0, 20.0, 110.0, 220.0)),
                       Detection("hole", 1, 0.42, (300.0, 40.0, 350.0, 90.0))], TriageConfig())
    now = datetime.datetime.now(datetime.timezone.utc)
    events = [build_event(device=f"box{box}", camera=f"cam{i % 2}", sequence=i + 1, captured_at=now,
                          frame_width=640, frame_height=480, decision=decision,
                          model_id="conveyor-yolov8n@000000000000", prefilter_latency_ms=12.3) for i in range(n)]
    return [(f"edge/box{box}/{e.camera}/tags", e.to_json()) for e in events]


def publisher(port: int, box: int, n: int, ready: EventType, go: EventType, done: EventType) -> None:
    """One box: connect, say so, wait for the start, publish ``n`` events at QoS 1, wait for every PUBACK."""
    messages = payloads(box, n)
    acked = [0]

    def on_publish(client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        acked[0] += 1
        if acked[0] == n:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-box{box}", protocol=mqtt.MQTTv5)
    client.on_publish = on_publish
    client.on_connect = lambda c, u, f, rc, p: ready.set()
    client.max_inflight_messages_set(64)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    go.wait(WAIT_S)
    for topic, payload in messages:
        client.publish(topic, payload, qos=1)
    done.wait(WAIT_S)
    client.disconnect()
    client.loop_stop()


def subscriber(port: int, ready: EventType, stop: EventType, result: multiprocessing.Queue[tuple[int, float]]) -> None:
    """The plant's consumer: count events until ``stop`` and then 2 s of silence; put (count, time of the last)."""
    seen = [0, 0.0]

    def on_subscribe(client: mqtt.Client, userdata: object, mid: int, rcs: object, props: object) -> None:
        ready.set()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        seen[0] += 1
        seen[1] = time.monotonic()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-consumer", protocol=mqtt.MQTTv5)
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("edge/+/+/tags", qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    stop.wait(WAIT_S)
    while time.monotonic() - seen[1] < 2.0:
        time.sleep(0.1)
    client.disconnect()
    client.loop_stop()
    result.put((int(seen[0]), float(seen[1])))


def _wait_for_publishers(dones: list[EventType], procs: list[multiprocessing.process.BaseProcess]) -> None:
    """Until every publisher had every PUBACK; stops early when a process died."""
    deadline = time.monotonic() + WAIT_S
    while not all(d.wait(0.2) for d in dones):
        dead = [p.name for p in procs if p.exitcode not in (None, 0)]
        if dead:
            raise SystemExit(f"{', '.join(dead)} failed (see its traceback above)")
        if time.monotonic() > deadline:
            raise SystemExit(f"not every PUBACK arrived within {WAIT_S:.0f} s")


def one_setting(broker: LocalMosquitto, boxes: int, events: int) -> tuple[float, int]:
    """Events per second the subscriber received with ``boxes`` publishers, and how many it never got."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, stop = ctx.Event(), ctx.Event(), ctx.Event()
    result: multiprocessing.Queue[tuple[int, float]] = ctx.Queue()
    sub = ctx.Process(target=subscriber, args=(broker.port, ready, stop, result), daemon=True)
    sub.start()
    readies, dones = [ctx.Event() for _ in range(boxes)], [ctx.Event() for _ in range(boxes)]
    pubs = [ctx.Process(target=publisher, args=(broker.port, b, events, readies[b], go, dones[b]), daemon=True)
            for b in range(boxes)]
    try:
        if not ready.wait(60):
            raise SystemExit("the subscriber did not subscribe within 60 s")
        for p in pubs:
            p.start()
        if not all(r.wait(120) for r in readies):
            raise SystemExit("not every publisher connected within 120 s")
        t0 = time.monotonic()
        go.set()
        _wait_for_publishers(dones, [sub, *pubs])
        stop.set()
        received, last = result.get(timeout=WAIT_S)
        return received / (last - t0), boxes * events - received
    finally:
        for p in [*pubs, sub]:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, nargs="+", default=[1, 4, 16], help="publishers per setting")
    parser.add_argument("--events", type=int, default=2000, help="events per publisher")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, the settings alternating")
    args = parser.parse_args(argv)
    if any(b < 1 or b > 64 for b in args.boxes) or not 1 <= args.events <= 100_000 or not 1 <= args.rounds <= 20:
        parser.error("--boxes each 1 to 64, --events 1 to 100000, --rounds 1 to 20")
    rates: dict[int, list[float]] = {b: [] for b in args.boxes}
    lost: dict[int, list[int]] = {b: [] for b in args.boxes}
    with LocalMosquitto() as broker:
        for _ in range(args.rounds):
            for boxes in args.boxes:
                rate, missing = one_setting(broker, boxes, args.events)
                rates[boxes].append(rate)
                lost[boxes].append(missing)
    first = statistics.median(rates[args.boxes[0]])
    print(f"one Mosquitto, QoS 1 in and out, {args.events} events per box, {args.rounds} round(s), "
          f"{os.cpu_count()} cores shared with the clients, load {os.getloadavg()[0]:.1f}")
    print(f"{'boxes':>6} {'received/s (median)':>20} {'rounds':>22} {'vs first':>9} {'never received':>15}")
    for boxes in args.boxes:
        median = statistics.median(rates[boxes])
        each = ", ".join(f"{r:,.0f}" for r in rates[boxes])
        missing = ", ".join(str(n) for n in lost[boxes])
        print(f"{boxes:>6} {median:>20,.0f} {each:>22} {median / first:>8.2f}x {missing:>15}")
    print("never received: dropped by the broker for the slow subscriber (max_queued_messages, 1000 by default)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
