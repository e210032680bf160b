"""The health service answers from cached state and tells callers no more than a short public phrase."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.gateway.health import PUBLIC_REASONS, REASON_KEY, public_reason
from agent.gateway.server import SERVICE_NAME
from tests.fakes.gateway_fixtures import StartGateway, wait_for_health
from tests.fakes.ollama import FakeOllama


def check_with_metadata(channel: grpc.Channel, timeout: float = 1.0) -> tuple[str, dict[str, bytes]]:
    reply, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
        health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return status, {k: v for k, v in call.trailing_metadata() or ()}


@pytest.fixture
def frozen_ollama() -> Iterator[str]:
    """An "Ollama" that accepts TCP connections and never answers (a hung process)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_check_answers_at_once_while_ollama_is_frozen(start_gateway: StartGateway, frozen_ollama: str,
                                                       channels: Callable[..., grpc.Channel]) -> None:
    gw = start_gateway(ollama={"host": frozen_ollama, "connect_timeout_s": 0.5})
    channel = channels(gw.address)
    for _ in range(3):  # each answer from the cached state; a probe with a 1 s timeout reads NOT_SERVING
        started = time.monotonic()
        status, trailing = check_with_metadata(channel, timeout=1.0)
        assert status == "NOT_SERVING"
        assert time.monotonic() - started < 0.9
        assert trailing[REASON_KEY] == b"VLM unreachable"


def test_check_tells_no_host_model_list_or_error_text(start_gateway: StartGateway,
                                                       channels: Callable[..., grpc.Channel]) -> None:
    with FakeOllama(models=("moondream:latest", "secret-model:7b")) as other:
        gw = start_gateway(other)
        channel = channels(gw.address)
        assert wait_for_health(channel, "NOT_SERVING", SERVICE_NAME) == "NOT_SERVING"
        status, trailing = check_with_metadata(channel)
    assert status == "NOT_SERVING"
    assert set(trailing) == {REASON_KEY}  # no model list
    assert trailing[REASON_KEY] == b"model not available"
    told = b"".join(trailing.values())
    for secret in (b"moondream", b"secret-model", b"127.0.0.1", str(other.port).encode(), b"ollama pull"):
        assert secret not in told
    assert "not pulled" in gw.server.health.reason  # type: ignore[union-attr]  # the detail stays in the gateway


def test_set_is_the_one_settable_state(start_gateway: StartGateway, channels: Callable[..., grpc.Channel]) -> None:
    gw = start_gateway(health_interval_s=3600)  # no poll in between
    channel = channels(gw.address)
    monitor = gw.server.health  # type: ignore[union-attr]
    gw.call(monitor.set("model llava:7b loading: 40% of 4.1 GB", public="loading model"))
    assert check_with_metadata(channel) == ("NOT_SERVING", {REASON_KEY: b"loading model"})
    gw.call(monitor.set(None))
    assert check_with_metadata(channel) == ("SERVING", {REASON_KEY: b"serving"})


@pytest.mark.parametrize(("reason", "phrase"), [
    (None, "serving"),
    ("model 'llava:7b' is not pulled in Ollama at http://u:pw@host:11434; run `ollama pull`", "model not available"),
    ("model 'x' cannot take images (capabilities: completion)", "model not available"),
    ("Ollama at http://host:11434 is unreachable (connection refused)", "VLM unreachable"),
    ("Ollama at http://host:11434 did not answer /api/show in time", "VLM unreachable"),
    ("Ollama answered /api/show with HTTP 500: runner crashed", "VLM not ready"),  # anything else: generic
])
def test_public_reason(reason: str | None, phrase: str) -> None:
    assert public_reason(reason) == phrase
    assert phrase in PUBLIC_REASONS
