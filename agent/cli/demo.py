"""``edge-agent demo``: the agent on a synthetic conveyor camera, the shipped model,
and a real Mosquitto (a private one on a free port unless ``--broker`` names one).

It prints one line per inspected frame (with the scene's ground truth beside the
verdict) and, on Ctrl-C or after ``--duration``, a summary.
"""

from __future__ import annotations

import collections
import contextlib
import pathlib
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import TextIO

from agent.config.models import AgentConfig, CameraConfig, MetricsConfig, ModelConfig, MqttConfig, OutboxConfig
from agent.pipeline import Inspection
from agent.publish.local_broker import LocalMosquitto
from agent.service import AgentService, RunSummary

_COLOURS = {"pass": "32", "defect": "31", "uncertain": "33"}


def format_inspection(ins: Inspection, colour: bool) -> str:
    ev = ins.event
    verdict = f"{ev.verdict:<9}"
    if colour:
        verdict = f"\033[{_COLOURS[ev.verdict]}m{verdict}\033[0m"
    tags = " ".join(f"{t.detection.label}:{t.detection.confidence:.2f}{'?' if t.state == 'uncertain' else ''}"
                    for t in ins.decision.tags)
    if not tags and ins.result.task == "classify":  # a classifier's pass (or thin uncertain) frame: its top class
        label, p = ins.result.ranked[0]
        tags = f"{label}:{p:.2f}"
    tags = tags or "-"
    truth = ""
    if ins.frame.truth is not None:
        faint = sum(d.faint for d in ins.frame.truth.defects)
        truth = f"  truth={ins.frame.truth.verdict}" + (f" ({faint} faint)" if faint else "")
    return (f"{ev.captured_at:%H:%M:%S.%f}"[:-3] + f"  {ev.camera} #{ev.sequence:<5} {verdict} "
            f"{ev.prefilter_latency_ms:5.1f} ms  {tags}{truth}")


@contextlib.contextmanager
def _broker(url: str | None, out: TextIO) -> Iterator[str]:
    if url is not None:
        yield url
        return
    broker = LocalMosquitto()
    broker.start()
    try:
        out.write(f"private Mosquitto on {broker.url} (watch it: mosquitto_sub -h 127.0.0.1 -p {broker.port} "
                  "-t 'edge/#' -v)\n")
        yield broker.url
    finally:
        broker.stop()


def run_demo(
    *,
    broker: str | None,
    duration: float | None,
    fps: float,
    seed: int,
    model: pathlib.Path | None,
    quiet: bool,
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
) -> int:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    colour = out.isatty()
    agreement: collections.Counter[tuple[str, str]] = collections.Counter()

    def on_inspection(ins: Inspection) -> None:
        if ins.frame.truth is not None:
            agreement[(ins.frame.truth.verdict, ins.event.verdict)] += 1
        if not quiet:
            out.write(format_inspection(ins, colour) + "\n")
            out.flush()

    with _broker(broker, out) as url, tempfile.TemporaryDirectory(prefix="edge-agent-demo-") as state:
        config = AgentConfig(
            device_id="demo",
            cameras=[CameraConfig(id="conveyor1", source=f"synthetic://conveyor?seed={seed}&fps={fps:g}", fps=fps)],
            model=ModelConfig(path=model) if model else ModelConfig(),
            mqtt=MqttConfig(url=url, stats_interval_s=10),
            outbox=OutboxConfig(path=pathlib.Path(state) / "outbox.sqlite"),
            metrics=MetricsConfig(listen="127.0.0.1:0"),  # a free port: a real agent may hold 9464
        )
        service = AgentService(config, on_inspection=on_inspection)
        service.start()
        if not service.publisher.wait_connected(10.0):
            out.write(f"warning: not connected to {url} yet; events wait in the publisher's queue\n")
        out.write(f"inspecting synthetic://conveyor at {fps:g} fps, model {config.model.path.name}; "
                  f"topics edge/demo/conveyor1/tags and edge/demo/status"
                  f"{'' if duration else '; Ctrl-C to stop'}\n")
        if service.health is not None and service.health.server is not None:
            out.write(f"metrics: {service.health.server.url}/metrics, health: {service.health.server.url}/healthz\n")
        service.wait(stop, duration)
        summary = service.shutdown(timeout=10.0)
    out.write(render_summary(summary, agreement))
    return 0 if summary.flushed else 1


def render_summary(s: RunSummary, agreement: collections.Counter[tuple[str, str]]) -> str:
    total = sum(s.inspected.values())
    lines = ["", f"== summary: {total} frames inspected in {s.seconds:.1f} s "
             f"({total / s.seconds if s.seconds else 0:.1f} fps)"]
    lines.append("verdicts:    " + ", ".join(f"{v}={s.verdicts.get(v, 0)}" for v in ("pass", "defect", "uncertain")))
    lines.append("escalation:  " + ", ".join(f"{k}={v}" for k, v in sorted(s.escalations.items())))
    lines.append(f"prefilter:   p50 {s.latency_p50_ms:.1f} ms, p99 {s.latency_p99_ms:.1f} ms per frame")
    if agreement:
        lines.append("against the scene's ground truth (rows: truth, columns: verdict):")
        lines.append(f"    {'':8} {'pass':>6} {'defect':>7} {'uncertain':>10}")
        for truth in ("pass", "defect"):
            row = [agreement[(truth, v)] for v in ("pass", "defect", "uncertain")]
            lines.append(f"    {truth:8} {row[0]:>6} {row[1]:>7} {row[2]:>10}")
    for cam, st in s.cameras.items():
        lines.append(f"camera {cam}: read {st.frames_read}, dropped {st.dropped}, corrupt {st.corrupt}, "
                     f"state {st.state}")
    if s.publisher is not None:
        p = s.publisher
        lines.append(f"mqtt: committed to the outbox {p.committed}, acknowledged by the broker {p.acked}, "
                     f"evicted {p.evicted}, still pending {p.pending}"
                     + ("" if s.flushed else " (NOT all acknowledged before shutdown)"))
    return "\n".join(lines) + "\n"
