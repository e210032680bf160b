"""What keeping the agent's OPC UA address space updated costs, side by side in one run.

    python scripts/bench_opcua.py [--events 5000] [--rate 100] [--frames 300] [--rounds 2] [--cameras 1]

1. Per event: the event fan-out's listeners called on prepared tag events, each side in turn: the metrics listener
   the agent always runs (the reference), and the OPC UA server's listener with a real asyncua server running and
   a real client (in another process) subscribed to every variable of the camera (100 ms publishing). Two
   regimes: --events back to back (the server's write passes coalesce them: latest value wins), and --rate events
   a second for 4 s (about one write pass per event, as on a line). Printed: the caller's µs per event (what the
   inference thread pays), and the process's CPU µs per event until the server wrote the last value (the server's
   thread included: what the box pays).
2. The whole agent: the shipped model on --cameras synthetic cameras of --frames frames each (played as fast as they
   are taken), a real Mosquitto, without and with the OPC UA server (and its subscribed client), alternating for
   --rounds rounds: frames/s of each run, and the agent process's CPU ms per frame (steadier than frames/s on a
   box shared with other work); the medians and their ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import functools
import pathlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asyncua import ua  # noqa: E402
from asyncua.client.client import Client  # noqa: E402

from agent.capture.grabber import GrabberStats  # noqa: E402
from agent.config.models import AgentConfig, CameraConfig, MetricsConfig, MqttConfig  # noqa: E402
from agent.config.opcua_server import OpcUaServerConfig  # noqa: E402
from agent.core.decision import TriageDecision, TriagedTag  # noqa: E402
from agent.core.detections import Detection  # noqa: E402
from agent.core.event import TagEvent, build_event  # noqa: E402
from agent.core.ports import Published  # noqa: E402
from agent.ops.metrics import EventMetrics  # noqa: E402
from agent.ops.snapshot import AgentSnapshot, CameraProgress, Progress  # noqa: E402
from agent.outputs.opcua_server import nodemap  # noqa: E402
from agent.outputs.opcua_server.server import OpcUaServer  # noqa: E402
from agent.publish.local_broker import LocalMosquitto, free_port  # noqa: E402
from agent.runtime.service import AgentService  # noqa: E402


class Subscriber:
    """A real asyncua client in a process of its own (its CPU is not the agent's), subscribed to every variable
    of the given cameras at a 100 ms publishing interval."""

    def __init__(self, url: str, cameras: list[str]) -> None:
        self.url, self.cameras = url, cameras
        self.notifications = 0
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Subscriber:
        self._proc = subprocess.Popen([sys.executable, __file__, "--subscribe", self.url, *self.cameras],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None  # noqa: S101  (PIPE)
        if self._proc.stdout.readline().strip() != "subscribed":
            raise RuntimeError(f"the client did not subscribe to {self.url}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            out, _ = self._proc.communicate("stop\n", timeout=30)
            self.notifications = int(out.split()[-1]) if out.split() else 0


async def subscribe(url: str, cameras: list[str]) -> None:
    """The client process: subscribe, say so, count data changes until stdin says stop, print the count."""
    count = [0]

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            count[0] += 1

    client = Client(url, timeout=10)
    client.session_timeout = 600_000
    async with client:
        ns = await client.get_namespace_index("urn:edge-agent")
        nodes = [client.get_node(ua.NodeId(ua.String(nodemap.camera_node_id(cam, spec.path)), ua.Int16(ns)))
                 for cam in cameras for spec in nodemap.CAMERA_NODES]
        sub = await client.create_subscription(100, Handler())
        await sub.subscribe_data_change(nodes)
        print("subscribed", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
    print(count[0], flush=True)


def events(n: int, camera: str) -> list[Published]:
    now = datetime.datetime.now(datetime.timezone.utc)
    scratch = TriagedTag(Detection("scratch", 0, 0.91, (10.0, 20.0, 60.0, 80.0)), "accepted")
    out = []
    for i in range(n):
        decision = TriageDecision("defect", (scratch,)) if i % 3 == 0 else TriageDecision("pass", ())
        event: TagEvent = build_event(device="box1", camera=camera, sequence=i + 1, captured_at=now, frame_width=640,
                                      frame_height=480, decision=decision, model_id="bench@0", prefilter_latency_ms=9.0)
        out.append(Published(event, 0.001, False))
    return out


def per_event(listener: Callable[[Published], None], batch: list[Published],
              drained: Callable[[], bool] = lambda: True, rate: float = 0.0) -> tuple[float, float]:
    """(caller µs per event, process CPU µs per event until ``drained``); ``rate``: events per second (0: back to
    back)."""
    cpu0, caller = time.process_time(), 0.0
    start = time.perf_counter()
    for i, published in enumerate(batch):
        if rate:
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        t0 = time.perf_counter()
        listener(published)
        caller += time.perf_counter() - t0
    caller = caller / len(batch) * 1e6
    deadline = time.monotonic() + 30
    while not drained() and time.monotonic() < deadline:
        time.sleep(0.001)
    return caller, (time.process_time() - cpu0) / len(batch) * 1e6


def belt_running(config: AgentConfig) -> Callable[[], AgentSnapshot]:
    """The ops snapshot of an agent whose one camera, belt, runs (the server serves the cameras that run)."""
    stats = GrabberStats("belt", 0, 0, 0, 0, 0, 0, "online", None)
    snapshot = AgentService(config).snapshot
    return lambda: dataclasses.replace(snapshot(), progress=Progress((CameraProgress(stats, True, None, ""),),
                                                                     None, None))


def wrote(server: OpcUaServer, event_id: str) -> bool:
    """True once the server's address space shows ``event_id`` as belt's last event."""
    return bool(server.written("belt", "EventId") == event_id)


def bench_listeners(n: int, rate: float) -> None:
    config = AgentConfig(cameras=[CameraConfig(id="belt", source="synthetic://conveyor")])
    port = free_port()
    server = OpcUaServer(OpcUaServerConfig(enabled=True, port=port), belt_running(config), ["belt"])
    server.start()
    rows: list[tuple[str, str, float, float, str]] = []
    try:
        with Subscriber(f"opc.tcp://127.0.0.1:{port}/edge-agent/", ["belt"]) as sub:
            for regime, count, pace in ((f"back to back, {n} events", n, 0.0),
                                        (f"{rate:g} events/s, {int(rate * 4)} events", int(rate * 4), rate)):
                batch = events(count, "belt")
                last, writes0 = batch[-1].event.event_id, server.writes
                ref = per_event(EventMetrics().on_published, batch, rate=pace)
                ours = per_event(server.on_published, batch, functools.partial(wrote, server, last), rate=pace)
                rows += [(regime, "metrics listener (reference)", *ref, ""),
                         (regime, "OPC UA server listener", *ours, f"{server.writes - writes0} write passes")]
    finally:
        server.stop()
    print(f"per event on one camera (a third of them defects); a client in another process subscribed to its "
          f"variables got {sub.notifications} data changes")
    print(f"{'events':28} {'listener':30} {'caller µs/event':>16} {'CPU µs/event':>13}  server")
    for regime, name, caller, cpu, note in rows:
        print(f"{regime:28} {name:30} {caller:16.1f} {cpu:13.1f}  {note}")


def run_agent(broker: LocalMosquitto, cameras: int, frames: int, opcua: bool) -> tuple[float, float]:
    """(frames/s, the agent process's CPU ms per frame) of one run."""
    cams = [CameraConfig(id=f"cam{i}", source=f"synthetic://conveyor?seed={i}&fps=0&frames={frames}")
            for i in range(cameras)]
    port = free_port()
    config = AgentConfig(device_id="bench", cameras=cams, mqtt=MqttConfig(url=broker.url, stats_interval_s=0),
                         metrics=MetricsConfig(enabled=False),
                         opcua_server=OpcUaServerConfig(enabled=opcua, port=port))
    service = AgentService(config)
    service.start()
    try:
        sub = Subscriber(f"opc.tcp://127.0.0.1:{port}/edge-agent/", [c.id for c in cams]) if opcua else None
        if sub is not None:
            sub.__enter__()
        loop = service.loop
        if loop is None:
            raise RuntimeError("the agent did not start its inference loop")
        t0, cpu0, done0 = time.perf_counter(), time.process_time(), sum(loop.counters.inspected.values())
        while not loop.finished:
            time.sleep(0.01)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if sub is not None:
            sub.__exit__()
    finally:
        summary = service.shutdown(timeout=15.0)
    inspected = sum(summary.inspected.values()) - done0  # the frames inspected while measured (from t0 on)
    return inspected / seconds, cpu / inspected * 1000.0


def bench_agent(cameras: int, frames: int, rounds: int) -> None:
    runs: dict[str, list[tuple[float, float]]] = {"without the OPC UA server": [],
                                                   "with it (and a subscribed client)": []}
    with LocalMosquitto() as broker:
        for _ in range(rounds):
            for name in runs:
                runs[name].append(run_agent(broker, cameras, frames, opcua=name.startswith("with ")))
    base_fps = statistics.median(fps for fps, _ in runs["without the OPC UA server"])
    base_cpu = statistics.median(cpu for _, cpu in runs["without the OPC UA server"])
    print(f"\nthe whole agent, {cameras} camera(s) x {frames} frames, {rounds} round(s) per side, alternating")
    print(f"{'side':36} {'frames/s per run':>20} {'median':>7} {'vs without':>10} {'CPU ms/frame':>13} "
          f"{'vs without':>10}")
    for name, side in runs.items():
        fps = statistics.median(f for f, _ in side)
        cpu = statistics.median(c for _, c in side)
        print(f"{name:36} {' '.join(f'{f:.1f}' for f, _ in side):>20} {fps:7.1f} {fps / base_fps:9.3f}x "
              f"{cpu:13.2f} {cpu / base_cpu:9.3f}x")


def main() -> None:
    if sys.argv[1:2] == ["--subscribe"]:
        asyncio.run(subscribe(sys.argv[2], sys.argv[3:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=100.0, help="events per second of the paced regime")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cameras", type=int, default=1)
    args = parser.parse_args()
    bench_listeners(args.events, args.rate)
    bench_agent(args.cameras, args.frames, args.rounds)


if __name__ == "__main__":
    main()
