#!/usr/bin/env python3
"""Trigger-to-result latency of the PLC handshake, measured side by side in one run: Modbus TCP and OPC UA,
a frame the prefilter decides and one escalated to the VLM (the fake Ollama answering at once, behind a real
gateway; the shipped classifier with a triage band that decides every frame, or none), each against a real PLC
server started here (pymodbus's TCP server, asyncua's Server).

    python scripts/bench_handshake.py [--parts 100] [--fps 60]

The agent is the whole service (synthetic camera, the shipped model, a real Mosquitto); a PLC program raises the
trigger, waits for result_ready, reads the result and acknowledges, ``--parts`` times. Printed per case:
the agent's trigger-to-result (trigger seen -> result_ready written) p50/p99, the PLC side's (trigger raised ->
result_ready read, which adds both sides' polling) p50/p99, and each p50 as a ratio of Modbus's prefilter case.
Part of the latency is the camera: the trigger waits for the next frame captured after it (1/fps on average
half of it); the rest is inference, triage, the outbox commit and the writes.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import sys
import threading
import time
from collections.abc import Iterator

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.config.escalation import DedupeConfig, EscalationConfig, RateLimitConfig  # noqa: E402
from agent.config.models import ModelConfig, TriageConfig  # noqa: E402
from agent.core.ports import Published  # noqa: E402
from agent.outputs.plc.output import open_transport  # noqa: E402
from agent.outputs.plc.regmap import parse_address  # noqa: E402
from agent.publish.local_broker import LocalMosquitto  # noqa: E402
from agent.runtime.loop import latency_percentiles  # noqa: E402
from agent.runtime.service import AgentService  # noqa: E402
from tests.fakes.gateway import GatewayThread, gateway_config  # noqa: E402
from tests.fakes.ollama import FakeOllama  # noqa: E402
from tests.outputs.plc.agent_setup import MAPS, agent_config, connection  # noqa: E402
from tests.outputs.plc.plcs import ModbusPlc, OpcUaPlc, PlcProgram  # noqa: E402

# the shipped classifier in both cases, so that only the triage differs
CLASSIFIER = ModelConfig(path=REPO / "models" / "conveyor-resnet-cls.int8.onnx")
DECIDED = TriageConfig(accept=0.0, reject=0.0, margin=0.0)  # every frame decided by the prefilter
UNCERTAIN = TriageConfig(accept=1.0, reject=0.0, margin=1.0)  # no frame is sure enough: every one goes to the VLM


class Escalated:
    """Which events went to the VLM (a listener on the agent's fan-out)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self._lock = threading.Lock()

    def on_published(self, published: Published) -> None:
        if published.event.escalation.status == "answered":
            with self._lock:
                self.ids.add(published.event.event_id)


@contextlib.contextmanager
def gateway() -> Iterator[str]:
    with FakeOllama() as fake:
        gw = GatewayThread(gateway_config(fake.url)).start()
        try:
            yield gw.address
        finally:
            gw.stop()


def run_case(broker: LocalMosquitto, protocol: str, escalate: str | None, parts: int,
             fps: float) -> tuple[list[float], list[float], int]:
    """(agent latencies ms, PLC-side latencies ms, how many) of the ``parts`` triggers that were of the kind
    asked for (escalated: the ones the VLM answered)."""
    plc = (ModbusPlc(MAPS[protocol]) if protocol == "modbus" else OpcUaPlc(MAPS[protocol])).start()
    try:
        cfg = agent_config(broker.url, protocol, plc.port, triage=UNCERTAIN if escalate else DECIDED)
        cam = cfg.cameras[0].model_copy(update={"source": f"synthetic://conveyor?seed=3&fps={fps:g}"})
        escalation = EscalationConfig(gateway=escalate, dedupe=DedupeConfig(enabled=False),
                                      rate_per_camera=RateLimitConfig(per_minute=60_000, burst=1000))
        cfg = cfg.model_copy(update={"cameras": [cam], "model": CLASSIFIER,
                                     "escalation": escalation if escalate else cfg.escalation})
        service = AgentService(cfg)
        service.start()
        seen = Escalated()
        assert service.events is not None
        service.events.add(seen)
        program = PlcProgram(plc, poll_s=0.001)
        got = [program.part() for _ in range(parts + 3)][3:]  # three to warm up
        agent_ms = list(service.plc.links[0].channels[0].stats.latencies_ms)[3:]  # one per result, in order
        service.shutdown(timeout=5.0)
        if any(p is None for p in got) or len(agent_ms) != parts:
            raise SystemExit(f"{protocol}: a trigger got no result ({service.plc.stats().cameras[0]})")
        keep = [i for i, p in enumerate(got) if p is not None and (not escalate or p.event_id in seen.ids)]
        return ([agent_ms[i] for i in keep], [got[i].latency_s * 1000.0 for i in keep  # type: ignore[union-attr]
                                              ], len(keep))
    finally:
        plc.stop()


def read_cost(protocol: str, reads: int) -> float:
    """Mean ms of one read of the trigger bit through the agent's transport (what each poll costs)."""
    plc = (ModbusPlc(MAPS[protocol]) if protocol == "modbus" else OpcUaPlc(MAPS[protocol])).start()
    transport = open_transport(connection(protocol, plc.port))
    try:
        transport.connect()
        address = parse_address(protocol, "trigger", MAPS[protocol]["trigger"])  # type: ignore[arg-type]
        for _ in range(20):
            transport.read_bool(address)
        t0 = time.perf_counter()
        for _ in range(reads):
            transport.read_bool(address)
        return (time.perf_counter() - t0) * 1000.0 / reads
    finally:
        transport.close()
        plc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", type=int, default=100)
    parser.add_argument("--fps", type=float, default=60.0)
    args = parser.parse_args()
    rows = []
    with LocalMosquitto() as broker, gateway() as address:
        for protocol in ("modbus", "opcua"):
            for label, escalate in (("prefilter", None), ("escalated (VLM)", address)):
                agent_ms, plc_ms, kept = run_case(broker, protocol, escalate, args.parts, args.fps)
                rows.append((protocol, label, agent_ms, plc_ms, kept))
    base = latency_percentiles(rows[0][2])[0] or 1.0
    print(f"trigger -> result_ready, {args.parts} parts per case, camera at {args.fps:g} fps (PLC side: trigger "
          "raised -> result_ready read)")
    print(f"{'protocol':8}  {'frame':16} {'parts':>5}  {'agent p50':>9} {'p99':>7}  {'PLC side p50':>12} {'p99':>7}"
          f"  {'agent p50 / modbus prefilter':>28}")
    for protocol, label, agent_ms, plc_ms, kept in rows:
        a50, a99 = latency_percentiles(agent_ms)
        p50, p99 = latency_percentiles(plc_ms)
        print(f"{protocol:8}  {label:16} {kept:>5}  {a50:9.1f} {a99:7.1f}  {p50:12.1f} {p99:7.1f}  {a50 / base:28.2f}")
    costs = {protocol: read_cost(protocol, 500) for protocol in ("modbus", "opcua")}
    print("one poll (a read of the trigger bit through the agent's transport, loopback, mean of 500): "
          f"modbus {costs['modbus']:.3f} ms, opcua {costs['opcua']:.3f} ms, opcua / modbus "
          f"{costs['opcua'] / costs['modbus']:.2f}")


if __name__ == "__main__":
    main()
