"""``edge-agent demo``: the agent on a synthetic conveyor camera, the shipped model,
and a real Mosquitto (a private one on a free port unless ``--broker`` names one).

It prints one line per inspected frame (with the scene's ground truth beside the
verdict) and, on Ctrl-C or after ``--duration``, a summary. Its options are checked before
a broker starts. ``--duration`` counts from the start of the inspection, the wait for the
broker included; the shutdown waits at most :data:`SHUTDOWN_WAIT_S` for acknowledgements.
The demo's outbox is a temporary folder: events the broker did not take are counted in
the summary and discarded with it.
"""

from __future__ import annotations

import collections
import contextlib
import pathlib
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO, TypeVar

from pydantic import BaseModel, ValidationError

from agent.config.models import AgentConfig, CameraConfig, MetricsConfig, ModelConfig, MqttConfig, OutboxConfig
from agent.core.inspection import Inspection
from agent.errors import EdgeAgentError
from agent.publish.local_broker import LocalMosquitto
from agent.runtime.service import AgentService, RunSummary

_COLOURS = {"pass": "32", "defect": "31", "uncertain": "33"}
CONNECT_WAIT_S = 2.0
"""the longest the demo waits for the broker before it says it is not connected (part of --duration)"""
SHUTDOWN_WAIT_S = 5.0
"""the longest the shutdown waits for the broker to acknowledge what is in flight"""
M = TypeVar("M", bound=BaseModel)
_PRIVATE_BROKER = "mqtt://127.0.0.1:1883"  # a stand-in while the options are checked; the real port is free


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


def _option(option: str, value: object, make: Callable[[], M]) -> M:
    """``make()``, with a validation error told as the option and value that caused it."""
    try:
        return make()
    except ValidationError as exc:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors(include_url=False))
        raise EdgeAgentError(f"{option} {value}: {reasons}") from None


def demo_config(url: str, *, fps: float, seed: int, model: pathlib.Path | None,
                state: pathlib.Path) -> AgentConfig:
    """The demo agent's config; EdgeAgentError naming the option for a bad --broker, --fps, --seed, --model."""
    if seed < 0:
        raise EdgeAgentError(f"--seed {seed}: expected 0 or more")
    if model is not None and not model.is_file():
        raise EdgeAgentError(f"--model {model}: no such file; expected an ONNX prefilter (the shipped one is "
                             "models/conveyor-yolov8n.int8.onnx)")
    mqtt = _option("--broker", url, lambda: MqttConfig(url=url, stats_interval_s=10))
    camera = _option("--fps", f"{fps:g}", lambda: CameraConfig(
        id="conveyor1", source=f"synthetic://conveyor?seed={seed}&fps={fps:g}", fps=fps))
    return AgentConfig(
        device_id="demo", cameras=[camera], mqtt=mqtt,
        model=ModelConfig(path=model) if model else ModelConfig(),
        outbox=OutboxConfig(path=state / "outbox.sqlite"),
        metrics=MetricsConfig(listen="127.0.0.1:0"),  # a free port: a real agent may hold 9464
    )


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
    with tempfile.TemporaryDirectory(prefix="edge-agent-demo-") as state:
        config = demo_config(broker or _PRIVATE_BROKER, fps=fps, seed=seed, model=model,
                             state=pathlib.Path(state))  # bad options are refused before a broker starts
        with _broker(broker, out) as url:
            if url != config.mqtt.url:
                config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"url": url})})
            return _run(config, duration, quiet, out, stop or threading.Event())


def _run(config: AgentConfig, duration: float | None, quiet: bool, out: TextIO, stop: threading.Event) -> int:
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

    url, fps = config.mqtt.url, config.cameras[0].fps
    service = AgentService(config, on_inspection=on_inspection)
    service.start()
    started = time.monotonic()  # --duration counts the inspection, the wait for the broker included
    wait = CONNECT_WAIT_S if duration is None else min(CONNECT_WAIT_S, duration)
    if not service.publisher.wait_connected(wait):
        out.write(f"warning: not connected to {url} yet; events wait in the demo's temporary outbox\n")
    out.write(f"inspecting synthetic://conveyor at {fps:g} fps, model {config.model.path.name}; "
              f"topics edge/demo/conveyor1/tags and edge/demo/status"
              + (f"; stops after {duration:g} s" if duration else "; Ctrl-C to stop")
              + f", then waits at most {SHUTDOWN_WAIT_S:g} s for the broker's acknowledgements\n")
    if service.health is not None and service.health.server is not None:
        out.write(f"metrics: {service.health.server.url}/metrics, health: {service.health.server.url}/healthz\n")
    service.wait(stop, None if duration is None else max(0.0, duration - (time.monotonic() - started)))
    summary = service.shutdown(timeout=SHUTDOWN_WAIT_S, outbox_kept=False)
    out.write(render_summary(summary, agreement, url))
    return 0 if summary.flushed else 1


def render_summary(s: RunSummary, agreement: collections.Counter[tuple[str, str]], broker: str) -> str:
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
                     f"evicted {p.evicted}, still pending {p.pending}")
        if not s.flushed:
            why = (f"{broker} did not acknowledge them within the {SHUTDOWN_WAIT_S:g} s shutdown wait" if p.connected
                   else f"{broker} was not reachable" + (f" ({p.last_error})" if p.last_error else ""))
            lines.append(f"mqtt: {p.pending} event(s) NOT delivered: {why}; the demo's outbox is temporary and is "
                         "discarded with them")
    return "\n".join(lines) + "\n"
