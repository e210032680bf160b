"""A gateway in front of several Ollama servers (``ollama.servers``, :mod:`agent.gateway.pool`): real gateways on
loopback in front of several fake Ollamas; calls spread by load, a server that dies mid-call answered by another
within the deadline, per-server breakers, health, /metrics and /healthz; the config's errors."""

from __future__ import annotations

import concurrent.futures
import pathlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.errors import ConfigError
from agent.gateway.config import GatewayConfig, load_gateway_config
from agent.gateway.metrics import render_gateway_metrics
from agent.gateway.supervision import GatewayHealth
from agent.ops.notify import Notifier
from agent.wire import escalation_pb2_grpc as pb_grpc
from tests.escalation import samples
from tests.fakes.gateway import GatewayThread
from tests.fakes.gateway_fixtures import wait_for_health
from tests.fakes.ollama import FakeOllama

Channels = Callable[..., grpc.Channel]


@pytest.fixture
def fakes() -> Iterator[list[FakeOllama]]:
    """Three fake Ollamas; stopped at the end."""
    started = [FakeOllama().start() for _ in range(3)]
    yield started
    for fake in started:
        fake.stop()


def pool_gateway(servers: list[object], **overrides: object) -> GatewayThread:
    """A started gateway in front of ``servers`` (``ollama.servers``), the test defaults of gateway_config."""
    data: dict[str, object] = {"listen": "127.0.0.1:0", "health_interval_s": 0.1, "summary_interval_s": 0,
                               "shutdown_grace_s": 0.5,
                               "ollama": {"servers": servers, "timeout_s": 10.0, "connect_timeout_s": 1.0}}
    return GatewayThread(GatewayConfig.model_validate(data | overrides)).start()


def answered(fake: FakeOllama) -> int:
    """Chats the fake answered or is answering (its record's status is set just after the reply is sent)."""
    return sum(1 for r in fake.chat_requests() if not r.disconnected and r.status in (0, 200))


def test_calls_spread_by_load_a_faster_server_gets_more(fakes: list[FakeOllama], channels: Channels) -> None:
    fast, slow, _ = fakes
    fast.delay_s, slow.delay_s = 0.05, 0.2
    gw = pool_gateway([fast.url, slow.url], limits={"parallel": 2, "queue": 16})
    try:
        stub = pb_grpc.EscalationStub(channels(gw.address))
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda _: stub.Describe(samples.request(), timeout=10), range(30)))
        assert all(r.attempts == 1 for r in replies)
        # both servers busy all along: each answers about 1 / its service time, 20 vs 5 per second (4:1)
        assert answered(fast) + answered(slow) == 30
        assert answered(fast) >= 2 * answered(slow) >= 2, (answered(fast), answered(slow))
        assert gw.server is not None and gw.server.pool is not None
        views = {v.name: v for v in gw.server.pool.servers()}
        assert views[f"127.0.0.1:{fast.port}"].outcomes["ok"] == answered(fast)
        assert all(v.outstanding == 0 and v.breaker == "closed" and v.healthy for v in views.values())
    finally:
        gw.stop(grace=0)


def test_a_server_that_dies_mid_call_is_retried_once_on_another_within_the_deadline(
        fakes: list[FakeOllama], channels: Channels) -> None:
    dying, other, _ = fakes
    dying.delay_s = 3.0
    # the dying server weighs more: the first call goes to it
    gw = pool_gateway([{"url": dying.url, "name": "dying", "weight": 10}, {"url": other.url, "name": "other"}],
                      health_interval_s=30)
    try:
        stub = pb_grpc.EscalationStub(channels(gw.address))
        result: list[object] = []
        call = threading.Thread(target=lambda: result.append(stub.Describe(samples.request(), timeout=5)))
        start = time.monotonic()
        call.start()
        deadline = time.monotonic() + 5
        while not dying.chat_requests() and time.monotonic() < deadline:
            time.sleep(0.01)
        dying.down()  # the connection breaks while Ollama works on the call
        call.join(10)
        took = time.monotonic() - start
        assert len(result) == 1 and took < 2.5, took  # answered by the other server, long before 3 s
        assert answered(other) == 1 and answered(dying) == 0
        assert gw.server is not None and gw.server.pool is not None and gw.server.pool.retried == 1
        views = {v.name: v for v in gw.server.pool.servers()}
        assert views["dying"].outcomes["unavailable"] == 1 and views["other"].outcomes["ok"] == 1
    finally:
        gw.stop(grace=0)


def test_a_dead_servers_breaker_opens_and_then_it_is_skipped(fakes: list[FakeOllama], channels: Channels) -> None:
    dead, alive, _ = fakes
    gw = pool_gateway([{"url": dead.url, "name": "dead", "weight": 10}, {"url": alive.url, "name": "alive"}],
                      health_interval_s=30, pool={"failure_threshold": 2, "open_s": 30})
    try:
        dead.down()  # after the first health check: the pool still thinks it healthy
        stub = pb_grpc.EscalationStub(channels(gw.address))
        for _ in range(4):
            assert stub.Describe(samples.request(), timeout=5).attempts == 1
        assert gw.server is not None and gw.server.pool is not None
        views = {v.name: v for v in gw.server.pool.servers()}
        # two failures opened its breaker; the next calls went straight to the other server
        assert views["dead"].breaker == "open" and views["dead"].outcomes["unavailable"] == 2
        assert views["alive"].outcomes["ok"] == 4 and gw.server.pool.retried == 2

        text = render_gateway_metrics(gw.server, "llava:7b", "pool")
        samples_ = {(s.name, tuple(sorted(s.labels.items()))): s.value
                    for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples_[("edge_gateway_ollama_server_breaker", (("server", "dead"), ("state", "open")))] == 1
        assert samples_[("edge_gateway_ollama_server_calls_total", (("outcome", "ok"), ("server", "alive")))] == 4
        assert samples_[("edge_gateway_ollama_server_outstanding_calls", (("server", "alive"),))] == 0
        assert samples_[("edge_gateway_pool_retries_total", ())] == 2
        ok, doc = GatewayHealth(gw.server, gw.config, Notifier(None)).health_document()
        assert ok and [(s["name"], s["breaker"]) for s in doc["ollama"]["servers"]] == [
            ("dead", "open"), ("alive", "closed")]
    finally:
        gw.stop(grace=0)


def test_health_follows_the_servers_serving_while_one_is_up(fakes: list[FakeOllama], channels: Channels) -> None:
    a, b, _ = fakes
    gw = pool_gateway([a.url, b.url])
    try:
        channel = channels(gw.address)
        a.down()
        assert wait_for_health(channel, "NOT_SERVING", timeout=1.0) == "SERVING"  # b still serves
        assert gw.server is not None and gw.server.pool is not None
        deadline = time.monotonic() + 5
        while gw.server.pool.servers()[0].healthy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "unreachable" in (gw.server.pool.servers()[0].problem or "")
        b.down()
        assert wait_for_health(channel, "NOT_SERVING") == "NOT_SERVING"
        assert gw.server.health.reason.startswith("no Ollama server of the pool is available")
        a.up()
        assert wait_for_health(channel, "SERVING") == "SERVING"
    finally:
        gw.stop(grace=0)


def test_a_server_that_hangs_does_not_hold_the_pools_health_back(fakes: list[FakeOllama]) -> None:
    good = fakes[0]
    with socket.socket() as hung:  # accepts connections (the kernel's backlog) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        started = time.monotonic()
        gw = pool_gateway([f"http://127.0.0.1:{hung.getsockname()[1]}", good.url], health_interval_s=30)
        try:
            assert gw.server is not None and gw.server.pool is not None
            # the first check (bounded by connect_timeout_s + 2 = 3 s) saw the good server: SERVING at once
            assert gw.server.health.serving and time.monotonic() - started < 3.0
            hung_view, good_view = gw.server.pool.servers()
            assert "did not answer the health check within 2 s" in (hung_view.problem or "") and good_view.healthy
        finally:
            gw.stop(grace=0)


def test_with_every_breaker_open_a_call_fails_at_once_naming_each_server(
        fakes: list[FakeOllama], channels: Channels) -> None:
    a, b, _ = fakes
    gw = pool_gateway([{"url": a.url, "name": "a"}, {"url": b.url, "name": "b"}], health_interval_s=30,
                      pool={"failure_threshold": 1, "open_s": 30})
    try:
        a.down()
        b.down()
        stub = pb_grpc.EscalationStub(channels(gw.address))
        with pytest.raises(grpc.RpcError) as first:
            stub.Describe(samples.request(), timeout=5)
        assert first.value.code() == grpc.StatusCode.UNAVAILABLE  # tried a, then b: both breakers open now
        with pytest.raises(grpc.RpcError) as second:
            stub.Describe(samples.request(), timeout=5)
        details = second.value.details() or ""
        assert second.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no Ollama server of the pool may be asked now" in details
        assert "a: breaker open" in details and "b: breaker open" in details
    finally:
        gw.stop(grace=0)


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("servers", "words"), [
    # the same server written twice (case, trailing slash)
    ("['http://gpu1:11434', 'http://GPU1:11434/']", "servers[1] (http://GPU1:11434) is the same server as servers[0]"),
    # no port: the client would use 80
    ("['http://gpu1:11434', 'http://gpu2']", "'http://gpu2' has no port"),
    # not a URL at all
    ("['http://gpu1:11434', 'gpu2:11434']", "'gpu2:11434' is not an Ollama URL"),
    # two servers given one name
    ("[{url: 'http://a:11434', name: x}, {url: 'http://b:11434', name: x}]", "servers[1] is named 'x' like servers[0]"),
    # a weight of zero
    ("[{url: 'http://a:11434', weight: 0}, 'http://b:11434']", "greater than 0"),
])
def test_bad_server_lists_are_refused_naming_the_entry(tmp_path: pathlib.Path, servers: str, words: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"ollama:\n  servers: {servers}\n")
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, env={})
    text = str(info.value)
    assert "ollama.servers" in text and words in text, text


def test_host_and_servers_together_are_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("ollama:\n  host: http://a:11434\n  servers: ['http://b:11434', 'http://c:11434']\n")
    with pytest.raises(ConfigError, match="both host and servers are set"):
        load_gateway_config(path, env={})


def test_a_server_list_loads_with_names_and_weights(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("ollama:\n  servers: ['http://gpu1:11434/', {url: 'http://gpu2:11434', name: big, weight: 2}]\n")
    servers = load_gateway_config(path, env={}).ollama.server_list()
    assert [(s.url, s.label, s.weight) for s in servers] == [("http://gpu1:11434", "gpu1:11434", 1.0),
                                                             ("http://gpu2:11434", "big", 2.0)]
