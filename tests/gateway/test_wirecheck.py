"""Describe requests are counted field by field before gRPC parses them (on the event loop, holding the GIL),
so that no request within gRPC's size limit can hold the loop for long: 6 MiB of empty detections took
120-250 ms of the loop's CPU to parse; now the count stops at the 101st."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import grpc
import pytest

from agent.gateway.wirecheck import count_fields, field_budget
from agent.wire import escalation_pb2 as pb
from tests.escalation import samples
from tests.escalation.loopcpu import LoopCpu
from tests.fakes.gateway import GatewayThread

MIB = 1024 * 1024
MOST = {"detections": 100, "crops": 4}
BUDGET = field_budget(pb.DescribeRequest.DESCRIPTOR, MOST)
DESCRIPTOR = pb.DescribeRequest.DESCRIPTOR


def count(data: bytes) -> str | None:
    return count_fields(data, DESCRIPTOR, MOST, BUDGET)


def largest_valid() -> pb.DescribeRequest:
    box = pb.Box(x1=1, y1=2, x2=3, y2=4)
    return samples.request(detections=[pb.Detection(label="scratch", confidence=0.4, box=box)] * 100,
                           crops=[pb.Crop(image=samples.png(), label="hole", confidence=0.3, box=box)] * 4)


def test_a_request_within_the_limits_passes_whole() -> None:
    assert count(samples.request().SerializeToString()) is None
    assert count(largest_valid().SerializeToString()) is None
    assert count(b"") is None


def test_one_entry_too_many_is_refused_with_the_limit_named() -> None:
    request = largest_valid()
    request.detections.append(pb.Detection(label="x"))
    assert count(request.SerializeToString()) == ("the request has more than 100 detections; expected at most 100 "
                                                  "(limits.max_detections)")
    request = largest_valid()
    request.crops.append(pb.Crop())
    assert "more than 4 crops; expected at most 4 (limits.max_crops)" in (count(request.SerializeToString()) or "")


@pytest.mark.parametrize("data", [
    b"\x18\x01" * (3 * MIB),  # frame_sequence, 3 million times (the last one counts in protobuf)
    b"\x62\x04\x0a\x02\x08\x01" * MIB,  # an unknown field number 12, a million times
    b"\x42\x00" * 50 + b"\x42\xe0\xda\x01" + b"\x1a\x05\x0d\x00\x00\x80\x3f" * 4000,  # a detection of 4000 boxes
], ids=["repeated scalar", "unknown fields", "nested repeats"])
def test_a_request_of_more_fields_than_the_limits_allow_is_refused(data: bytes) -> None:
    assert "more protobuf fields than any request within the gateway's limits" in (count(data) or "")


def test_garbage_and_truncation_are_left_to_the_parser_or_refused() -> None:
    assert "wire type 3" in (count(b"\x0b\x0c") or "")  # a group: proto3 has none
    assert count(samples.request().SerializeToString()[:-3]) is None  # truncated: protobuf's own error


def test_six_mib_of_empty_detections_are_refused_without_holding_the_loop(gateway: GatewayThread) -> None:
    data = b"\x42\x00" * (3 * MIB - 1024)  # 3 million empty detections: under the 6 MiB receive limit
    with LoopCpu(pause_gc=True) as cpu, grpc.insecure_channel(gateway.address) as channel:
        describe = channel.unary_unary(f"/{pb.DESCRIPTOR.services_by_name['Escalation'].full_name}/Describe",
                                       request_serializer=None, response_deserializer=pb.DescribeResponse.FromString)
        describe(samples.request().SerializeToString(), timeout=10)  # connected, warm
        cpu.reset()
        with pytest.raises(grpc.RpcError) as caught:
            describe(data, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "detections; expected at most 100" in caught.value.details()
    # parsed whole, these took 120-250 ms of the loop's CPU in one callback
    assert cpu.longest_ms < 20.0, f"the loop ran {cpu.longest_ms:.1f} ms of CPU in one callback: {cpu.longest_what}"


@pytest.mark.slow
def test_the_loop_occupancy_bench_prints_before_and_after_side_by_side() -> None:
    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_loop_occupancy.py"
    proc = subprocess.run([sys.executable, str(script), "--requests", "1", "--burst", "4"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = dict(re.findall(r"^   6 MiB of 3M empty detections\s+(before|after)\s+[\d.]+\s+([\d.]+)\s+INVALID_ARGUMENT$",
                           proc.stdout, re.M))
    assert set(rows) == {"before", "after"}, proc.stdout
    assert float(rows["after"]) < float(rows["before"]), proc.stdout  # the parse no longer runs on the loop
    assert re.search(r"longest step, at once / in pieces: \d+x", proc.stdout), proc.stdout
