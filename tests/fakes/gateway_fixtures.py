"""Fixtures for the gateway's and the escalation client's tests: a fake Ollama, real gateways on loopback,
gRPC stubs. tests/gateway/conftest.py and tests/escalation/conftest.py make them fixtures of their folders.

    def test_x(fake_ollama, start_gateway):
        gw = start_gateway(limits={"queue": 0})          # a GatewayThread in front of fake_ollama
        stub = escalation_stub(gw.address)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.wire import escalation_pb2_grpc as pb_grpc
from tests.fakes.gateway import GatewayThread, gateway_config
from tests.fakes.ollama import FakeOllama

StartGateway = Callable[..., GatewayThread]


@pytest.fixture(autouse=True)
def _no_gateway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDGE_GATEWAY_* or OLLAMA_* variable from the developer's shell reaches the gateway or the
    ollama client (which reads OLLAMA_HOST and OLLAMA_API_KEY)."""
    for name in list(os.environ):
        if name.startswith(("EDGE_GATEWAY_", "OLLAMA_")):
            monkeypatch.delenv(name)


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A fresh fake Ollama with ``llava:7b`` pulled, no delay."""
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
def start_gateway(fake_ollama: FakeOllama) -> Iterator[StartGateway]:
    """Factory: ``start_gateway(fake=None, **config_overrides)`` starts a gateway (a GatewayThread) in front
    of ``fake`` (default: the ``fake_ollama`` fixture); all are stopped at the end of the test."""
    started: list[GatewayThread] = []

    def start(fake: FakeOllama | None = None, **overrides: Any) -> GatewayThread:
        gw = GatewayThread(gateway_config((fake or fake_ollama).url, **overrides)).start()
        started.append(gw)
        return gw

    yield start
    for gw in reversed(started):
        gw.stop(grace=0)


@pytest.fixture
def gateway(start_gateway: StartGateway) -> GatewayThread:
    """A gateway with the test defaults in front of ``fake_ollama``."""
    return start_gateway()


@pytest.fixture
def channels() -> Iterator[Callable[..., grpc.Channel]]:
    """Factory: ``channels(address, credentials=None, options=())`` opens a channel, closed after the test."""
    opened: list[grpc.Channel] = []

    def open_channel(address: str, credentials: grpc.ChannelCredentials | None = None,
                     options: tuple[tuple[str, Any], ...] = ()) -> grpc.Channel:
        channel = (grpc.secure_channel(address, credentials, options=options) if credentials is not None
                   else grpc.insecure_channel(address, options=options))
        opened.append(channel)
        return channel

    yield open_channel
    for channel in opened:
        channel.close()


@pytest.fixture
def stub(gateway: GatewayThread, channels: Callable[..., grpc.Channel]) -> pb_grpc.EscalationStub:
    return pb_grpc.EscalationStub(channels(gateway.address))


def health_status(channel: grpc.Channel, service: str = "") -> str:
    """The health service's answer for ``service`` as a name (SERVING, NOT_SERVING ...)."""
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_for_health(channel: grpc.Channel, wanted: str, service: str = "", timeout: float = 5.0) -> str:
    """Poll until the status is ``wanted`` or ``timeout`` passes; return the last status seen."""
    end = time.monotonic() + timeout
    status = health_status(channel, service)
    while status != wanted and time.monotonic() < end:
        time.sleep(0.02)
        status = health_status(channel, service)
    return status
