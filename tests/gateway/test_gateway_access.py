"""Who may call the gateway and how much: tokens, the listen-address rule, per-client quotas, health
watches that do not count, admission before any image is decoded."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import socket
import time
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.config.escalation import EscalationConfig
from agent.errors import ConfigError, GatewayError
from agent.escalation.client import EscalationClient, read_token
from agent.gateway.auth import TokenTable
from agent.gateway.config import load_gateway_config
from agent.gateway.metrics import render_gateway_metrics
from agent.wire import escalation_pb2_grpc as pb_grpc
from tests.escalation import samples
from tests.fakes.gateway_fixtures import StartGateway
from tests.fakes.ollama import FakeOllama

Channels = Callable[..., grpc.Channel]
TOKEN_A = "tA7mX2pQ9rL4vK8sN1wZ6yB3"
TOKEN_B = "bQ5nH8jR2tY7uI4oP1aS9dF6"


@pytest.fixture
def tokens_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "tokens"
    path.write_text(f"# clients\nline-1:{TOKEN_A}\nline-2:{TOKEN_B}  # the second line\n")
    path.chmod(0o600)
    return path


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


# -- tokens ---------------------------------------------------------------------------------------


def test_with_tokens_anonymous_and_wrong_tokens_are_refused(start_gateway: StartGateway, tokens_file: pathlib.Path,
                                                             fake_ollama: FakeOllama, channels: Channels) -> None:
    gw = start_gateway(auth={"tokens_file": str(tokens_file)})
    stub = pb_grpc.EscalationStub(channels(gw.address))
    for metadata, why in [(None, "no bearer token"), (bearer("x" * 24), "an unknown bearer token"),
                          ((("authorization", f"Basic {TOKEN_A}"),), "no bearer token")]:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Describe(samples.request(), timeout=5, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        assert why in caught.value.details()  # type: ignore[attr-defined]
    assert fake_ollama.chat_requests() == []  # the VLM never saw an anonymous call
    reply = stub.Describe(samples.request(), timeout=5, metadata=bearer(TOKEN_B))
    assert reply.verdict != 0
    totals = gw.server.stats.totals_by_client()  # type: ignore[union-attr]
    assert totals == {("anonymous", "UNAUTHENTICATED"): 3, ("line-2", "OK"): 1}
    text = render_gateway_metrics(gw.server, "llava:7b", fake_ollama.url)  # type: ignore[arg-type]
    assert 'edge_gateway_client_calls_total{client="line-2",code="OK"} 1.0' in text
    assert 'edge_gateway_client_calls_total{client="anonymous",code="UNAUTHENTICATED"} 3.0' in text
    assert TOKEN_B not in text
    # the health service answers without a token (probes, the agents' client-side health checking)
    reply_h = health_pb2_grpc.HealthStub(channels(gw.address)).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply_h.status == health_pb2.HealthCheckResponse.SERVING


def test_the_agent_sends_its_token_file(start_gateway: StartGateway, tokens_file: pathlib.Path,
                                         tmp_path: pathlib.Path) -> None:
    gw = start_gateway(auth={"tokens_file": str(tokens_file)})
    token_file = tmp_path / "agent-token"
    token_file.write_text(TOKEN_A + "\n")
    config = EscalationConfig(gateway=gw.address, token_file=token_file)

    async def call() -> tuple[str, str | None]:
        client = EscalationClient.connect(config)
        try:
            result = await client.describe(samples.request(), timeout=5)
        finally:
            await client.close()
        return result.status, result.reason

    assert asyncio.run(call()) == ("answered", None)
    assert gw.server.stats.totals_by_client() == {("line-1", "OK"): 1}  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "words"), [
    # (file text, words in the error)
    ("", ["no client"]),
    ("line-1 tA7mX2pQ9rL4vK8sN1wZ6yB3\n", ["line 1", "NAME:TOKEN"]),
    ("line-1:short\n", ["line 1", "at least 24"]),
    (f"a:{TOKEN_A}\na:{TOKEN_B}\n", ["line 2", "listed twice"]),
    (f"a:{TOKEN_A}\nb:{TOKEN_A}\n", ["line 2", "also another client's"]),
])
def test_bad_tokens_files_say_what_is_wrong(tmp_path: pathlib.Path, text: str, words: list[str]) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(GatewayError) as caught:
        TokenTable.from_file(path)
    assert all(w in str(caught.value) for w in words), str(caught.value)
    assert TOKEN_A not in str(caught.value) and TOKEN_B not in str(caught.value)


def test_a_tokens_file_readable_by_everyone_is_refused(tokens_file: pathlib.Path) -> None:
    tokens_file.chmod(0o644)
    with pytest.raises(GatewayError, match="readable by every user .*chmod 600"):
        TokenTable.from_file(tokens_file)


def test_the_agents_token_file_is_checked(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "token"
    for text, words in [("short\n", "one token of at least 24"), (f"line-1:{TOKEN_A}\n", "only the TOKEN part")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=words):
            read_token(EscalationConfig(gateway="127.0.0.1:1", token_file=path))
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(EscalationConfig(gateway="127.0.0.1:1", token_file=tmp_path / "missing"))


# -- the listen address ---------------------------------------------------------------------------


@pytest.mark.parametrize(("yaml_text", "ok"), [
    ("listen: 0.0.0.0:50061\n", False),  # every interface, nobody authenticates: refused
    ("listen: '[::]:50061'\n", False),
    ("listen: gateway.plant.example:50061\n", False),  # a name may resolve to anything
    ("listen: 0.0.0.0:50061\ninsecure: true\n", True),  # said in writing
    ("listen: 0.0.0.0:50061\nauth: {tokens_file: tokens}\n", True),
    ("listen: 127.0.0.1:50061\n", True),
    ("listen: '[::1]:50061'\n", True),
    ("listen: localhost:50061\n", True),
    ("listen: unix:/run/edge-agent-gateway/gateway.sock\n", True),
])
def test_a_listen_address_beyond_loopback_needs_authentication(tmp_path: pathlib.Path, yaml_text: str,
                                                                ok: bool) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml_text)
    if ok:
        load_gateway_config(path, env={})
        return
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path, env={})
    assert "reachable from other hosts" in str(caught.value) and "insecure: true" in str(caught.value)


# -- quotas and admission ---------------------------------------------------------------------------


def test_one_client_cannot_take_every_slot(start_gateway: StartGateway, tokens_file: pathlib.Path,
                                           fake_ollama: FakeOllama, channels: Channels) -> None:
    fake_ollama.delay_s = 0.5
    gw = start_gateway(auth={"tokens_file": str(tokens_file)}, limits={"parallel": 1, "queue": 3, "per_client": 2})
    stub = pb_grpc.EscalationStub(channels(gw.address))
    admission = gw.server.service.admission  # type: ignore[union-attr]
    first = [stub.Describe.future(samples.request(), timeout=10, metadata=bearer(TOKEN_A)) for _ in range(2)]
    wait_until(lambda: admission.admitted == 2)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Describe(samples.request(), timeout=10, metadata=bearer(TOKEN_A))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert "'line-1' already has 2" in caught.value.details()  # type: ignore[attr-defined]
    assert stub.Describe(samples.request(), timeout=10, metadata=bearer(TOKEN_B)).verdict != 0  # the other client
    assert all(f.result().verdict != 0 for f in first)
    assert admission.admitted == 0 and not admission.by_client


def test_health_watches_do_not_count_against_describe(start_gateway: StartGateway, channels: Channels) -> None:
    gw = start_gateway()  # parallel 1, queue 8: gRPC's old cap was 2 * (1 + 8) + 16 = 34 calls of any kind
    watches = []
    for _ in range(4):  # 40 agents' health watches, 10 per connection (its own: no shared subchannel pool)
        health = health_pb2_grpc.HealthStub(channels(gw.address, options=(("grpc.use_local_subchannel_pool", 1),)))
        for _ in range(10):
            watch = health.Watch(health_pb2.HealthCheckRequest(service="edge_agent.v1.Escalation"), timeout=30)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watches.append(watch)
    channel = channels(gw.address)
    assert pb_grpc.EscalationStub(channel).Describe(samples.request(), timeout=5).verdict != 0
    check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    for watch in watches:
        watch.cancel()


def test_a_full_gateway_refuses_before_looking_at_the_request(start_gateway: StartGateway, fake_ollama: FakeOllama,
                                                              channels: Channels) -> None:
    fake_ollama.delay_s = 0.5
    gw = start_gateway(limits={"parallel": 1, "queue": 0})
    stub = pb_grpc.EscalationStub(channels(gw.address))
    running = stub.Describe.future(samples.request(), timeout=10)
    wait_until(lambda: gw.server.service.admission.running == 1)  # type: ignore[union-attr]
    with pytest.raises(grpc.RpcError) as caught:  # a request that would be INVALID_ARGUMENT once read
        stub.Describe(samples.request(b"not an image at all"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert running.result().verdict != 0


def test_counts_are_checked_before_anything_is_read(start_gateway: StartGateway, channels: Channels) -> None:
    from agent.wire import escalation_pb2 as pb

    stub = pb_grpc.EscalationStub(channels(start_gateway().address))
    many = [pb.Detection(label="x", confidence=float("nan"))] * 2000  # each one bad too: the count comes first
    with pytest.raises(grpc.RpcError) as caught:
        stub.Describe(samples.request(b"not an image", detections=many), timeout=5)
    assert "more than 100 detections; expected at most 100" in caught.value.details()  # type: ignore[attr-defined]
    crops = [pb.Crop(image=b"junk")] * 5
    with pytest.raises(grpc.RpcError) as caught:
        stub.Describe(samples.request(b"not an image", crops=crops), timeout=5)
    assert "more than 4 crops; expected at most 4" in caught.value.details()  # type: ignore[attr-defined]


def test_a_call_that_times_out_waiting_gives_its_place_back(start_gateway: StartGateway, fake_ollama: FakeOllama,
                                                             channels: Channels) -> None:
    fake_ollama.delay_s = 0.6
    gw = start_gateway(limits={"parallel": 1, "queue": 2})
    admission = gw.server.service.admission  # type: ignore[union-attr]
    stub = pb_grpc.EscalationStub(channels(gw.address))
    running = stub.Describe.future(samples.request(), timeout=10)
    wait_until(lambda: admission.running == 1)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Describe(samples.request(), timeout=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    running.result()
    wait_until(lambda: admission.admitted == 0 and admission.waiting == 0 and admission.running == 0)


def test_calls_cut_off_while_their_request_arrives_give_their_place_back(start_gateway: StartGateway,
                                                                          channels: Channels) -> None:
    gw = start_gateway()
    admission = gw.server.service.admission  # type: ignore[union-attr]
    stub = pb_grpc.EscalationStub(channels(gw.address))
    big = samples.request(b"\xff\xd8\xff" + bytes(5 * 1024 * 1024))  # 5 MB: the deadline passes on the way
    for _ in range(12):  # more than parallel + queue (9): a leaked place would lock the next call out
        with pytest.raises(grpc.RpcError) as caught:
            stub.Describe(big, timeout=0.002)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    wait_until(lambda: admission.admitted == 0)
    assert stub.Describe(samples.request(), timeout=10).verdict != 0


def test_queued_calls_wait_unread(start_gateway: StartGateway, fake_ollama: FakeOllama, channels: Channels) -> None:
    fake_ollama.delay_s = 0.4
    gw = start_gateway(limits={"parallel": 1, "queue": 4})
    admission = gw.server.service.admission  # type: ignore[union-attr]
    stub = pb_grpc.EscalationStub(channels(gw.address))
    calls = [stub.Describe.future(samples.request(), timeout=10) for _ in range(5)]
    wait_until(lambda: admission.admitted == 5)
    assert admission.reading == 2  # the running call and the next; three wait as headers only
    assert all(c.result().verdict != 0 for c in calls)
    assert admission.reading == 0 and admission.admitted == 0


def test_a_connection_that_never_handshakes_is_closed(start_gateway: StartGateway, channels: Channels) -> None:
    gw = start_gateway(limits={"handshake_timeout_s": 0.5})
    idle = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(20)]  # type: ignore[arg-type]
    try:
        for sock in idle:  # the server sends its HTTP/2 settings, then hangs up (b"" or a reset)
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(1024):
                    pass
        assert pb_grpc.EscalationStub(channels(gw.address)).Describe(samples.request(), timeout=5).verdict != 0
    finally:
        for sock in idle:
            sock.close()
