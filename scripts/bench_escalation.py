#!/usr/bin/env python3
"""What the escalation gateway costs, measured side by side in one run against the fake Ollama
(tests/fakes/ollama.py) answering at once (zero delay), so that only our code is timed.

    python scripts/bench_escalation.py [--calls 400] [--seconds 3] [--width 672 --height 448]

1. Latency, same JPEG frame and prompt, one call at a time, after a warm-up:
   a. direct: the gateway's Ollama interface (``OllamaVlm.ask``: prompt, HTTP to Ollama,
      answer parsed and checked against the schema), called in this process;
   b. gateway: a gRPC ``Describe`` call from a grpc.aio client to the real gateway on
      loopback (which validates and decodes the image, builds the prompt and does a.).
   The two are interleaved in rounds so that background load hits both alike.
   Printed: p50/p90/p99 of each, the gateway's overhead (b - a) in ms and the ratio b / a.
2. Throughput: N agents (one gRPC channel each, like N camera boxes), each calling back to
   back for ``--seconds``, for N = 1, 2, 4, 8: calls/s and the latency each agent saw.

Three processes, as deployed: this one is the agent (the direct calls and the gRPC
clients), ``edge-agent gateway`` is the gateway, ``python -m tests.fakes.ollama`` is
Ollama. In one process the threads of all three would wait on each other's GIL, which
measures Python's thread switching (5 ms slices) rather than the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import grpc  # noqa: E402
import numpy as np  # noqa: E402

from agent.gateway.config import GatewayConfig  # noqa: E402
from agent.gateway.service import build_prompt  # noqa: E402
from agent.gateway.stats import percentile  # noqa: E402
from agent.gateway.vlm import OllamaVlm  # noqa: E402
from agent.wire import escalation_pb2 as pb  # noqa: E402
from agent.wire import escalation_pb2_grpc as pb_grpc  # noqa: E402
from tests.fakes.gateway import gateway_config  # noqa: E402

AGENTS = (1, 2, 4, 8)


@contextlib.contextmanager
def process(args: list[str], pattern: str, stream: str) -> Iterator[str]:
    """Start ``args``, wait for a line matching ``pattern`` on ``stream`` (stdout/stderr), yield its group 1,
    terminate the process at the end."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
    try:
        out = proc.stdout if stream == "stdout" else proc.stderr
        assert out is not None
        seen = ""
        for line in out:
            seen += line
            if match := re.search(pattern, line):
                break
        else:
            raise SystemExit(f"bench: {' '.join(args[:4])} did not start:\n{seen}")
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def make_request(width: int, height: int) -> pb.DescribeRequest:
    noise = np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", cv2.GaussianBlur(noise, (9, 9), 3), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise SystemExit("bench: OpenCV cannot encode JPEG here")
    return pb.DescribeRequest(
        device_id="bench", camera_id="cam1", frame_sequence=1, event_id="ev-bench", image=jpeg.tobytes(),
        source_width=width, source_height=height, template_id="inspect-v1", prefilter_model="bench",
        detections=[pb.Detection(label="scratch", confidence=0.42, box=pb.Box(x1=100, y1=80, x2=180, y2=120))])


def stats_ms(seconds: list[float]) -> tuple[float, float, float]:
    ordered = sorted(s * 1000.0 for s in seconds)
    return percentile(ordered, 0.5), percentile(ordered, 0.9), percentile(ordered, 0.99)


async def latency(config: GatewayConfig, gateway: str, request: pb.DescribeRequest, calls: int,
                  rounds: int) -> tuple[list[float], list[float]]:
    vlm = OllamaVlm.from_config(config.ollama)
    prompt = build_prompt(request, config)
    direct: list[float] = []
    via_gateway: list[float] = []
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = pb_grpc.EscalationStub(channel)
        for _ in range(max(20, calls // 10)):  # warm-up: connections, caches, code paths
            await vlm.ask(prompt, timeout=10)
            await stub.Describe(request, timeout=10)
        per_round = max(1, calls // rounds)
        for _ in range(rounds):
            for _ in range(per_round):
                start = time.perf_counter()
                await vlm.ask(prompt, timeout=10)
                direct.append(time.perf_counter() - start)
            for _ in range(per_round):
                start = time.perf_counter()
                await stub.Describe(request, timeout=10)
                via_gateway.append(time.perf_counter() - start)
    await vlm.aclose()
    return direct, via_gateway


async def throughput(gateway: str, request: pb.DescribeRequest, agents: int, seconds: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    errors: list[str] = []

    async def agent() -> int:
        done = 0
        async with grpc.aio.insecure_channel(gateway) as channel:
            stub = pb_grpc.EscalationStub(channel)
            await stub.Describe(request, timeout=10)  # connect before the clock starts
            await barrier.wait()
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                start = time.perf_counter()
                try:
                    await stub.Describe(request, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    errors.append(exc.code().name)
                    continue
                latencies.append(time.perf_counter() - start)
                done += 1
        return done

    barrier = asyncio.Barrier(agents) if hasattr(asyncio, "Barrier") else _Barrier(agents)
    counts = await asyncio.gather(*(agent() for _ in range(agents)))
    if errors:
        print(f"    ({len(errors)} failed calls: {sorted(set(errors))})")
    return sum(counts), latencies


class _Barrier:
    """asyncio.Barrier for Python 3.10."""

    def __init__(self, parties: int) -> None:
        self._parties, self._count, self._event = parties, 0, asyncio.Event()

    async def wait(self) -> None:
        self._count += 1
        if self._count >= self._parties:
            self._event.set()
        await self._event.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400, help="measured calls per path (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=3.0, help="throughput run per N (default %(default)s)")
    parser.add_argument("--width", type=int, default=672, help="frame width (default %(default)s)")
    parser.add_argument("--height", type=int, default=448, help="frame height (default %(default)s)")
    args = parser.parse_args()

    request = make_request(args.width, args.height)
    print(f"escalation gateway overhead: {os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, grpcio "
          f"{grpc.__version__}; frame {args.width}x{args.height} JPEG, {len(request.image):,} bytes; "
          "fake Ollama at zero delay")
    fake_cmd = [sys.executable, "-m", "tests.fakes.ollama", "--parallel", "8", "--stop-on-eof"]
    with process(fake_cmd, r"listening on (\S+)", "stdout") as ollama_url, tempfile.TemporaryDirectory() as tmp:
        config = gateway_config(ollama_url, limits={"parallel": 8, "queue": 64}, health_interval_s=30.0)
        config_file = pathlib.Path(tmp) / "gateway.yaml"
        config_file.write_text(config.model_dump_json(by_alias=True), encoding="utf-8")  # JSON is YAML
        gateway_cmd = [sys.executable, "-m", "agent.cli.main", "gateway", "--config", str(config_file)]
        with process(gateway_cmd, r"listening on (\S+);", "stderr") as address:
            direct, via = asyncio.run(latency(config, address, request, args.calls, args.rounds))
            d50, d90, d99 = stats_ms(direct)
            g50, g90, g99 = stats_ms(via)
            print(f"\n1. latency, one call at a time, {len(direct)} calls each (after warm-up), ms")
            print(f"   {'path':<34} {'p50':>7} {'p90':>7} {'p99':>7}")
            print(f"   {'direct (OllamaVlm.ask -> Ollama)':<34} {d50:7.2f} {d90:7.2f} {d99:7.2f}")
            print(f"   {'gateway (gRPC Describe)':<34} {g50:7.2f} {g90:7.2f} {g99:7.2f}")
            overhead = g50 - d50
            verdict = "ok" if overhead <= 5.0 else "ABOVE the 5 ms budget"
            print(f"   gateway overhead p50: {overhead:.2f} ms ({verdict}); p99: {g99 - d99:.2f} ms; "
                  f"ratio gateway/direct p50: {g50 / d50:.2f}x")

            print(f"\n2. throughput through the gateway, N agents calling back to back for {args.seconds:g} s "
                  f"(gateway limits.parallel={config.limits.parallel}, queue={config.limits.queue})")
            print(f"   {'agents':>6} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
            base = None
            for agents in AGENTS:
                calls, latencies = asyncio.run(throughput(address, request, agents, args.seconds))
                rate = calls / args.seconds
                base = base or rate
                p50, _, p99 = stats_ms(latencies)
                print(f"   {agents:>6} {rate:9.1f} {p50:8.2f} {p99:8.2f}   ({rate / base:.2f}x of 1 agent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
