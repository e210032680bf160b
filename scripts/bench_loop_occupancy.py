#!/usr/bin/env python3
"""How long the gateway's event loop is held per request near the size limits, old way and new side by side.

    python scripts/bench_loop_occupancy.py [--requests 5]

Measured as CPU time of the loop's thread in each asyncio callback (``tests/escalation/loopcpu.py``), which
a loaded machine does not change: loop *lag* also counts the time the thread waits for a core. A callback
that holds the loop for N ms delays every other call and health probe by N ms. The goal is none over 50 ms.

1. The chat body to Ollama for a frame and 4 crops of ``limits.max_image_bytes`` (2 MiB): built at once
   (``base64.b64encode`` of each image, then httpx's ``json=`` encoding, as the gateway did until ChatBody)
   and in pieces (:class:`agent.gateway.chatbody.ChatBody`): the longest step and the total.
2. Protobuf parsing of one request of ``limits.max_message_bytes`` (6 MiB), which gRPC does on the loop and
   which holds the GIL (a thread would not help): all images, and all detections (the worst case).
3. ``Describe`` through the real gateway (in this process, its loop in a thread; the fake Ollama answering
   at once in its own threads): per request, the loop's CPU in total and its longest callback, with the
   gateway as it was (body at once, request parsed whole) and as it is; and ``--burst`` requests at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import functools
import pathlib
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import grpc  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402

from agent.gateway import service as service_module  # noqa: E402
from agent.gateway import vlm as vlm_module  # noqa: E402
from agent.gateway.chatbody import ChatBody  # noqa: E402
from agent.gateway.service import RequestParser  # noqa: E402
from agent.wire import escalation_pb2 as pb  # noqa: E402
from tests.escalation import samples  # noqa: E402
from tests.escalation.loopcpu import LoopCpu  # noqa: E402
from tests.fakes.gateway import GatewayThread, gateway_config  # noqa: E402
from tests.fakes.ollama import FakeOllama  # noqa: E402

MIB = 1024 * 1024


class AtOnceBody:
    """The body as the gateway built it before ChatBody: every image's base64, then httpx's JSON encoding,
    in one step (the first piece of the stream)."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        messages = [{**m, "images": [base64.b64encode(i).decode() for i in m["images"]]} if m.get("images") else m
                    for m in body["messages"]]
        self._data = httpx.Request("POST", "http://ollama/api/chat", json={**body, "messages": messages}).read()
        self.length = len(self._data)

    async def stream(self) -> AsyncIterator[bytes]:
        yield self._data


def cpu_ms(func: Callable[[], object]) -> float:
    start = time.thread_time()
    func()
    return (time.thread_time() - start) * 1000.0


def chat_body_steps(body_class: Callable[[Mapping[str, Any]], Any], images: list[bytes]) -> tuple[float, float]:
    """(longest step, total) CPU ms of making ``body_class``'s bytes."""
    async def pieces() -> tuple[float, float]:
        steps, start = [], time.thread_time()
        body = body_class({"model": "llava:7b", "messages": [{"role": "user", "content": "x", "images": images}]})
        stream = body.stream().__aiter__()
        while True:
            try:
                await stream.__anext__()
            except StopAsyncIteration:
                break
            steps.append((time.thread_time() - start) * 1000.0)
            start = time.thread_time()
        return max(steps), sum(steps)
    return asyncio.run(pieces())


def noise_jpeg(side: int) -> bytes:
    noise = np.random.default_rng(5).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def describe_loop(gw: GatewayThread, data: bytes, requests: int) -> tuple[float, float, str]:
    """Median per-request loop CPU (total ms, longest callback ms) over ``requests`` calls, and the codes."""
    totals, longest, codes = [], [], set()
    with grpc.insecure_channel(gw.address) as channel:
        describe = channel.unary_unary(f"/{pb.DESCRIPTOR.services_by_name['Escalation'].full_name}/Describe")
        with LoopCpu() as cpu:
            for i in range(requests + 1):
                cpu.reset()
                try:
                    describe(data, timeout=30)
                    codes.add("OK")
                except grpc.RpcError as exc:
                    codes.add(exc.code().name)
                if i:  # the first call also connects and warms up
                    totals.append(cpu.total_ms)
                    longest.append(cpu.longest_ms)
    return statistics.median(totals), statistics.median(longest), ",".join(sorted(codes))


def describe_burst(gw: GatewayThread, data: bytes, calls: int) -> tuple[float, float, str]:
    """``calls`` requests at once (as attack_gateway.py's big_requests): the loop's CPU per call and its
    longest callback over the whole burst, and the codes."""
    codes: collections.Counter[str] = collections.Counter()
    with grpc.insecure_channel(gw.address) as channel:
        describe = channel.unary_unary(f"/{pb.DESCRIPTOR.services_by_name['Escalation'].full_name}/Describe")
        describe(samples.request().SerializeToString(), timeout=30)  # connected
        with LoopCpu() as cpu:
            for call in [describe.future(data, timeout=60) for _ in range(calls)]:
                try:
                    call.result()
                    codes["OK"] += 1
                except grpc.RpcError as exc:
                    codes[exc.code().name] += 1
    return cpu.total_ms / calls, cpu.longest_ms, ",".join(f"{k}={v}" for k, v in sorted(codes.items()))


class WholeParse:
    """The gateway's request parser before wirecheck: protobuf's, whatever the request holds."""

    def __init__(self, max_detections: int, max_crops: int) -> None:
        pass

    def __call__(self, data: bytes) -> pb.DescribeRequest:
        parsed: pb.DescribeRequest = pb.DescribeRequest.FromString(data)
        return parsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5, help="Describe calls per row (median shown)")
    parser.add_argument("--burst", type=int, default=30, help="requests at once in the last row (parallel + queue "
                        "are admitted, the rest refused unread, as in attack_gateway.py's big_requests)")
    args = parser.parse_args()
    rounds = max(1, args.requests)

    image = bytes(range(256)) * (2 * MIB // 256)
    print("1. chat body, frame + 4 crops of 2 MiB (13.3 MiB of JSON), CPU ms (median of", rounds, "runs)")
    rows = {name: [chat_body_steps(cls, [image] * 5) for _ in range(rounds)]
            for name, cls in (("at once", AtOnceBody), ("in pieces", ChatBody))}
    for name, runs in rows.items():
        print(f"   {name:<10} longest step {statistics.median(r[0] for r in runs):7.2f}   "
              f"total {statistics.median(r[1] for r in runs):7.2f}")
    ratio = statistics.median(r[0] for r in rows["at once"]) / statistics.median(r[0] for r in rows["in pieces"])
    print(f"   longest step, at once / in pieces: {ratio:.0f}x")

    detection = pb.Detection(label="scratch", confidence=0.5, box=pb.Box(x1=1, y1=1, x2=2, y2=2))
    by_detections = samples.request(detections=[detection] * ((6 * MIB - 128 * 1024) // (detection.ByteSize() + 2)))
    empty_detections = b"\x42\x00" * (3 * MIB - 1024)  # 3 million empty detections (gRPC's limit is 6 MiB)
    service_parse = RequestParser(max_detections=100, max_crops=4)  # the default limits
    jpeg = noise_jpeg(1600)  # 1.9 MB
    by_images = samples.request(jpeg, crops=[pb.Crop(image=jpeg, label="hole", confidence=0.4)] * 2)
    cases = (("frame + 2 crops, 5.7 MB", by_images.SerializeToString()),
             ("6 MiB of 170k detections", by_detections.SerializeToString()),
             ("6 MiB of 3M empty detections", empty_detections))
    print("\n2. protobuf parse of one request near limits.max_message_bytes (6 MiB), CPU ms (median)")
    for label, data in cases:
        parse = statistics.median(cpu_ms(functools.partial(pb.DescribeRequest.FromString, data))
                                  for _ in range(rounds))
        counted = statistics.median(cpu_ms(functools.partial(service_parse, data)) for _ in range(rounds))
        print(f"   {label:<29} {len(data) / MIB:4.2f} MiB  whole {parse:7.2f}   counted first {counted:7.2f}")

    print(f"\n3. Describe through the gateway, CPU of its loop per request, ms (median of {rounds})")
    print("   request                        gateway   total  longest callback  codes")
    with FakeOllama() as fake:
        for name, body, request_parser in (("before", AtOnceBody, WholeParse), ("after", ChatBody, RequestParser)):
            setattr(vlm_module, "ChatBody", body)  # noqa: B010 - the module's names, swapped for the old way
            setattr(service_module, "RequestParser", request_parser)  # noqa: B010
            try:
                with GatewayThread(gateway_config(fake.url, ollama={"num_ctx": 32768})) as gw:
                    for label, data in cases:
                        total, longest, codes = describe_loop(gw, data, rounds)
                        print(f"   {label:<30} {name:<7} {total:7.1f}  {longest:16.2f}  {codes}")
                    total, longest, codes = describe_burst(gw, cases[0][1], args.burst)
                    print(f"   {f'{args.burst} x the first, at once':<30} {name:<7} {total:7.1f}  {longest:16.2f}  "
                          f"{codes}")
            finally:
                setattr(vlm_module, "ChatBody", ChatBody)  # noqa: B010
                setattr(service_module, "RequestParser", RequestParser)  # noqa: B010
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
