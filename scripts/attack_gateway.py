#!/usr/bin/env python3
"""Attack a real ``edge-agent gateway`` on loopback, case by case, and watch what it costs the gateway.

    python scripts/attack_gateway.py [--cases all|NAME,NAME] [--scale 1.0]

Three processes, as deployed: this one is the attacker (and the agents), ``edge-agent gateway`` the
gateway (default limits: parallel 1, queue 8, per_client 4; bearer tokens on, loopback only), and
``python -m tests.fakes.ollama`` a fake Ollama answering after 20 ms. Each case gets a fresh gateway, so
its memory numbers are its own. Everything listens on 127.0.0.1 and every case ends by itself (each is
a few seconds; ``--scale`` shrinks the counts for a busy box).

Per case it prints: the gateway's peak and final RSS (``/proc``, sampled every 20 ms), the CPU seconds it
used, how late its event loop ran at worst during the case (the upper bound of the highest bucket of its
own ``edge_gateway_event_loop_lag_seconds`` histogram that grew: "<= 25 ms"), the
slowest health ``Check`` a prober in a fourth process saw (every 20 ms), whether the next valid call was
answered, and what the attack got back. The goals, checked at the end: RSS under 1 GB, no loop stall of
50 ms or more, 100 agents connected and served, anonymous calls refused.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import grpc  # noqa: E402
import numpy as np  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from agent.config.escalation import EscalationConfig  # noqa: E402
from agent.escalation.client import EscalationClient, channel_options  # noqa: E402
from agent.wire import escalation_pb2 as pb  # noqa: E402
from agent.wire import escalation_pb2_grpc as pb_grpc  # noqa: E402
from tests.escalation import samples  # noqa: E402

MB = 1024 * 1024
AGENTS = 100
Codes = collections.Counter[str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token(i: int) -> str:
    return f"attack-token-{i:04d}-" + "x" * 16


def bearer(i: int) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token(i)}"),)


# -- processes --------------------------------------------------------------------------------------


class Gateway:
    """``edge-agent gateway`` in a subprocess, with tokens for clients 0..AGENTS (AGENTS is the flooder)."""

    cpus: set[int] | None = None  # --gateway-cpu: the gateway's own core(s)

    def __init__(self, folder: pathlib.Path, ollama_url: str) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        tokens = folder / "tokens"
        tokens.write_text("".join(f"client-{i:03d}:{token(i)}\n" for i in range(AGENTS + 1)))
        tokens.chmod(0o600)
        config = folder / "gateway.yaml"
        config.write_text(f"listen: 127.0.0.1:{self.port}\nollama: {{host: '{ollama_url}'}}\n"
                          f"auth: {{tokens_file: '{tokens}'}}\nhealth_interval_s: 1\n"
                          f"metrics: {{listen: '127.0.0.1:{self.metrics_port}'}}\nlogging: {{level: error}}\n")
        code = "import sys; from agent.cli.main import main; sys.argv[0] = 'edge-agent'; main()"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-c", code, "gateway", "--config", str(config)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if Gateway.cpus is not None:
            os.sched_setaffinity(self.proc.pid, Gateway.cpus)
        self.address = f"127.0.0.1:{self.port}"
        self._wait_serving()

    def _wait_serving(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the gateway exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
                with contextlib.suppress(grpc.RpcError):
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        return
                time.sleep(0.1)
        raise RuntimeError("the gateway did not become SERVING in 30 s")

    def lag_buckets(self) -> dict[float, float]:
        """The event-loop lag histogram's cumulative counts by upper bound (inf for +Inf)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        found = re.findall(r'^edge_gateway_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)
        return {float(le): float(n) for le, n in found}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Sampler(threading.Thread):
    """Peak RSS and CPU time of a process, from /proc every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss = self.rss = 0
        self.cpu_start = self._cpu()
        self.cpu = 0.0
        self._halt = threading.Event()
        self.start()

    def _cpu(self) -> float:
        fields = pathlib.Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self._halt.wait(0.02):
            with contextlib.suppress(OSError, ValueError):
                status = pathlib.Path(f"/proc/{self.pid}/status").read_text()
                self.rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024  # type: ignore[union-attr]
                self.peak_rss = max(self.peak_rss, self.rss)
                self.cpu = self._cpu() - self.cpu_start

    def finish(self) -> None:
        self._halt.set()
        self.join()


def probe_main(address: str) -> None:
    """The prober (its own process): a health Check every 20 ms until stdin closes; prints the worst."""
    worst, failures, count = 0.0, 0, 0
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=10)  # connected
        print("ready", flush=True)
        while not done.wait(0.02):
            start = time.perf_counter()
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError:
                failures += 1
            worst = max(worst, time.perf_counter() - start)
            count += 1
    print(json.dumps({"worst_ms": worst * 1000, "failures": failures, "checks": count}), flush=True)


@contextlib.contextmanager
def prober(address: str) -> Iterator[dict[str, Any]]:
    proc = subprocess.Popen([sys.executable, __file__, "--probe", address], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    result: dict[str, Any] = {}
    if proc.stdout is None or proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the health prober did not start")
    try:
        yield result
    finally:
        out, _ = proc.communicate("", timeout=30)
        result.update(json.loads(out.strip().splitlines()[-1]))


# -- what is sent -----------------------------------------------------------------------------------


def noise_jpeg(side: int) -> bytes:
    """Noise at side x side, quality 85 (about 0.75 bytes a pixel: 2200 -> 3.7 MB, 1600 -> 1.9 MB)."""
    noise = np.random.default_rng(5).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def png16() -> bytes:
    """A 16-bit 4096x4096 PNG of about 130 kB (flat: it compresses, and decodes to 32 MB)."""
    return cv2.imencode(".png", np.zeros((4096, 4096), dtype=np.uint16))[1].tobytes()


def fire(stub: pb_grpc.EscalationStub, requests: list[tuple[pb.DescribeRequest, Any]],
         timeout: float = 15.0) -> Codes:
    """All requests at once (request, metadata); their status codes."""
    return collect([stub.Describe.future(r, timeout=timeout, metadata=m) for r, m in requests])


def collect(calls: list[Any]) -> Codes:
    """Wait for every call (gRPC futures); their status codes."""
    codes: Codes = collections.Counter()
    for call in calls:
        try:
            call.result()
            codes["OK"] += 1
        except grpc.RpcError as exc:
            codes[exc.code().name] += 1  # type: ignore[attr-defined]
    return codes


# -- the cases --------------------------------------------------------------------------------------


def case_baseline(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    codes: Codes = collections.Counter()
    for _ in range(n):
        stub.Describe(samples.request(), timeout=10, metadata=bearer(0))
        codes["OK"] += 1
    return {"codes": dict(codes)}


def case_anonymous(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    wrong = (("authorization", "Bearer " + "n" * 32),)
    codes = fire(stub, [(samples.request(), None)] * (n // 2) + [(samples.request(), wrong)] * (n - n // 2))
    return {"codes": dict(codes), "goal_refused": set(codes) == {"UNAUTHENTICATED"}}


def case_one_client_flood(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    with futures.ThreadPoolExecutor(1) as pool:
        flood = pool.submit(fire, stub, [(samples.request(), bearer(AGENTS))] * n)
        time.sleep(0.05)
        other = fire(stub, [(samples.request(), bearer(1))] * 3)
        return {"flooder": dict(flood.result()), "other_client": dict(other)}


def _five_images(side: int) -> pb.DescribeRequest:
    image = noise_jpeg(side)
    return samples.request(image, crops=[pb.Crop(image=image, label="scratch", confidence=0.5)] * 4)


def case_big_requests(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    """``n`` requests at once of frame + 4 crops just under the default limits (6 MiB, 2 MiB an image)."""
    request = _five_images(1200)
    codes = fire(stub, [(request, bearer(i % AGENTS)) for i in range(n)], timeout=30)
    return {"request_mb": round(request.ByteSize() / MB, 1), "codes": dict(codes)}


def case_oversized_requests(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    """``n`` requests at once of 17.5 MB (frame + 4 crops of 3.7 MB, the size of the report's attack)."""
    request = _five_images(2200)
    codes = fire(stub, [(request, bearer(i % AGENTS)) for i in range(n)])
    return {"request_mb": round(request.ByteSize() / MB, 1), "codes": dict(codes)}


def case_detections(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    many = [pb.Detection(label="scratch", confidence=0.5, box=pb.Box(x1=1, y1=1, x2=2, y2=2))] * 160_000
    request = samples.request(detections=many)
    return {"request_mb": round(request.ByteSize() / MB, 1),
            "codes": dict(fire(stub, [(request, bearer(i)) for i in range(n)]))}


def case_empty_detections(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    """``n`` requests at once of 6 MiB of empty detections: 3 million fields, the most gRPC's receive limit
    lets in (parsed whole, one took 120 ms of CPU on the gateway's event loop)."""
    data = b"\x42\x00" * (3 * MB - 1024)
    with grpc.insecure_channel(gw.address) as channel:
        describe = channel.unary_unary(f"/{pb.DESCRIPTOR.services_by_name['Escalation'].full_name}/Describe")
        codes = collect([describe.future(data, timeout=15, metadata=bearer(i % AGENTS)) for i in range(n)])
    return {"request_mb": round(len(data) / MB, 1), "codes": dict(codes)}


def case_scan_bombs(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    bomb = samples.request(samples.progressive_jpeg(4096, 4096))  # 883 scans: refused from its markers
    limit = samples.request(samples.progressive_jpeg(4096, 4096, 31, 0))  # 32 scans: decoded, in a worker
    return {"883_scans": dict(fire(stub, [(bomb, bearer(i % AGENTS)) for i in range(n)])),
            "32_scans": dict(fire(stub, [(limit, bearer(i % AGENTS)) for i in range(n)], timeout=30))}


def case_png16(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    request = samples.request(png16())
    return {"png_kb": len(request.image) // 1024, "codes": dict(fire(stub, [(request, bearer(i)) for i in range(n)]))}


def case_truncated(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    data = samples.jpeg()
    request = samples.request(data[: len(data) // 2] + b"\xff\xd9")
    return {"codes": dict(fire(stub, [(request, bearer(i)) for i in range(n)]))}


def _idle_sockets(port: int, n: int) -> list[socket.socket]:
    opened = []
    for _ in range(n):
        with contextlib.suppress(OSError):
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    return opened


def case_idle_grpc(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    idle = _idle_sockets(gw.port, n)
    try:
        start = time.perf_counter()
        with grpc.insecure_channel(gw.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            pb_grpc.EscalationStub(channel).Describe(samples.request(), timeout=10, metadata=bearer(2))
        return {"idle_sockets": len(idle), "describe_ms": round((time.perf_counter() - start) * 1000, 1)}
    finally:
        for sock in idle:
            sock.close()


def case_idle_http(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    idle = _idle_sockets(gw.metrics_port, n)
    try:
        start = time.perf_counter()
        while time.perf_counter() - start < 15:
            url = f"http://127.0.0.1:{gw.metrics_port}/healthz"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    break
            time.sleep(0.1)
        return {"idle_sockets": len(idle), "healthz_after_s": round(time.perf_counter() - start, 2)}
    finally:
        for sock in idle:
            sock.close()


def case_agents(gw: Gateway, stub: pb_grpc.EscalationStub, n: int) -> dict[str, Any]:
    """``n`` agents, each its own connection with the agent's channel options (client-side health checking
    keeps a health watch open on each), each with its own token; each calls until answered (backing off
    on RESOURCE_EXHAUSTED) within 60 s."""
    options = [*channel_options(EscalationConfig(gateway=gw.address)), ("grpc.use_local_subchannel_pool", 1)]

    async def agent(i: int) -> tuple[bool, int]:
        # one connection per agent, as from separate boxes (no shared subchannel pool)
        client = EscalationClient(grpc.aio.insecure_channel(gw.address, options=options), gw.address, token(i))
        tries, end = 0, time.monotonic() + 60
        try:
            while time.monotonic() < end:
                tries += 1
                result = await client.describe(samples.request(), timeout=20)
                if result.status == "answered":
                    return True, tries
                await asyncio.sleep(0.1 + (i % 10) * 0.03)
            return False, tries
        finally:
            await client.close()

    async def run() -> list[tuple[bool, int]]:
        return await asyncio.gather(*(agent(i) for i in range(n)))

    results = asyncio.run(run())
    served = sum(ok for ok, _ in results)
    return {"agents": n, "served": served, "tries_max": max(t for _, t in results),
            "goal_served": served == n}


CASES: dict[str, tuple[Callable[[Gateway, pb_grpc.EscalationStub, int], dict[str, Any]], int]] = {
    "baseline": (case_baseline, 20),
    "anonymous": (case_anonymous, 200),
    "one_client_flood": (case_one_client_flood, 50),
    "big_requests": (case_big_requests, 100),
    "oversized_requests": (case_oversized_requests, 100),
    "detections": (case_detections, 5),
    "empty_detections": (case_empty_detections, 10),
    "scan_bombs": (case_scan_bombs, 10),
    "png16": (case_png16, 10),
    "truncated": (case_truncated, 20),
    "idle_grpc": (case_idle_grpc, 1000),
    "idle_http": (case_idle_http, 1000),
    "agents": (case_agents, AGENTS),
}


def _worst_lag_ms(before: dict[float, float], after: dict[float, float]) -> float:
    """The upper bound of the worst event-loop lag between two scrapes of the histogram (ms; inf beyond
    its last bucket)."""
    total = after[float("inf")] - before[float("inf")]
    for bound in sorted(after):
        if after[bound] - before.get(bound, 0.0) >= total:
            return bound * 1000
    return float("inf")


def run_case(name: str, n: int, ollama_url: str) -> dict[str, Any]:
    func, _ = CASES[name]
    with tempfile.TemporaryDirectory() as folder:
        gw = Gateway(pathlib.Path(folder), ollama_url)
        try:
            sampler = Sampler(gw.proc.pid)
            with grpc.insecure_channel(gw.address) as channel, prober(gw.address) as probe:
                stub = pb_grpc.EscalationStub(channel)
                lag_before = gw.lag_buckets()
                start = time.perf_counter()
                outcome = func(gw, stub, n)
                wall = time.perf_counter() - start
                try:
                    stub.Describe(samples.request(), timeout=10, metadata=bearer(3))
                    next_ok = True
                except grpc.RpcError:
                    next_ok = False
            sampler.finish()
            lag_ms = _worst_lag_ms(lag_before, gw.lag_buckets())
        finally:
            gw.stop()
    return {"case": name, "n": n, "wall_s": round(wall, 2), "peak_rss_mb": round(sampler.peak_rss / MB),
            "end_rss_mb": round(sampler.rss / MB), "cpu_s": round(sampler.cpu, 2), "loop_lag_max_ms": lag_ms,
            "probe_worst_ms": round(probe.get("worst_ms", float("nan")), 1), "probe_failures": probe.get("failures"),
            "next_valid_call_ok": next_ok, "outcome": outcome}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="all", help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the counts (0.2 on a busy box)")
    parser.add_argument("--gateway-cpu", type=int, metavar="N",
                        help="pin the gateway to core N and this attacker, its agents, the prober and the fake Ollama "
                             "to the other cores, as when the attack comes from other machines (needs 2+ cores)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe_main(args.probe)
        return 0
    names = list(CASES) if args.cases == "all" else args.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; expected some of {', '.join(CASES)}")
    if args.gateway_cpu is not None:
        cores = os.sched_getaffinity(0)
        if args.gateway_cpu not in cores or len(cores) < 2:
            parser.error(f"--gateway-cpu {args.gateway_cpu}: expected one of the cores {sorted(cores)}, "
                         "and at least 2 of them (the attacker takes the others)")
        Gateway.cpus = {args.gateway_cpu}
        os.sched_setaffinity(0, cores - Gateway.cpus)  # children (fake Ollama, prober) inherit the rest
        print(f"gateway pinned to core {args.gateway_cpu}; attacker, prober and fake Ollama on "
              f"{sorted(cores - Gateway.cpus)}", flush=True)
    fake = subprocess.Popen([sys.executable, "-m", "tests.fakes.ollama", "--delay", "0.02", "--stop-on-eof"],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    rows = []
    try:
        url = (fake.stdout.readline() if fake.stdout else "").split()[-1]
        for name in names:
            n = max(1, round(CASES[name][1] * args.scale))
            row = run_case(name, n, url)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if fake.stdin:
            fake.stdin.close()
        fake.wait(10)
    print("\ncase               n  wall_s  peak_RSS_MB  end_RSS_MB  cpu_s  loop_lag<=ms  probe_worst_ms  next_ok")
    for r in rows:
        print(f"{r['case']:<16} {r['n']:>4} {r['wall_s']:>7} {r['peak_rss_mb']:>12} {r['end_rss_mb']:>11} "
              f"{r['cpu_s']:>6} {r['loop_lag_max_ms']:>12} {r['probe_worst_ms']:>15}  {r['next_valid_call_ok']}")
    goals = {
        "RSS under 1 GB in every case": all(r["peak_rss_mb"] < 1024 for r in rows),
        "no event-loop stall over 50 ms": all(r["loop_lag_max_ms"] <= 50 for r in rows),
        "the next valid call answered after every case": all(r["next_valid_call_ok"] for r in rows),
    }
    for r in rows:
        for key, value in r["outcome"].items():
            if key.startswith("goal_"):
                goals[f"{r['case']}: {key[5:]}"] = bool(value)
    print()
    for goal, met in goals.items():
        print(f"{'met    ' if met else 'NOT MET'}  {goal}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
