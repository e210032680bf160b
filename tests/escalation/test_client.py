"""The agent's gRPC client against a real grpc.aio servicer on loopback: answers, every error code,
deadlines, retries, a gateway that is down, round_robin over two gateways, unix sockets, TLS."""

from __future__ import annotations

import asyncio
import json
import pathlib
import socket
import subprocess
import time
from collections.abc import Iterator

import grpc
import pytest

from agent.config.escalation import EscalationConfig
from agent.errors import ConfigError
from agent.escalation.client import CallResult, EscalationClient, channel_credentials, channel_options, classify
from agent.wire import escalation_pb2 as pb
from tests.escalation import samples
from tests.escalation.scripted import Fail, Hang, ScriptedGateway, reply


@pytest.fixture
def gateway() -> Iterator[ScriptedGateway]:
    with ScriptedGateway() as gw:
        yield gw


def describe(config: EscalationConfig, timeout: float = 5.0, request: pb.DescribeRequest | None = None,
             credentials: grpc.ChannelCredentials | None = None, calls: int = 1) -> list[CallResult]:
    """``calls`` Describe calls, one after the other, on one fresh client (made on its own loop)."""
    async def run() -> list[CallResult]:
        client = EscalationClient.connect(config, credentials)
        try:
            return [await client.describe(request or samples.request(), timeout) for _ in range(calls)]
        finally:
            await client.close()
    return asyncio.run(run())


def test_an_answer_comes_back_in_agent_terms(gateway: ScriptedGateway) -> None:
    (result,) = describe(EscalationConfig(gateway=gateway.address))
    assert (result.status, result.code, result.healthy, result.reason) == ("answered", "OK", True, None)
    answer = result.answer
    assert answer is not None
    assert (answer.verdict, answer.model, answer.description) == ("defect", "llava:7b",
                                                                  "A thin scratch on the upper left of the part.")
    assert [(label, round(c, 2)) for label, c in answer.tags] == [("scratch", 0.83)]
    assert [(d.type, d.severity) for d in answer.defects] == [("scratch", "low")]
    assert result.latency_ms > 0
    (request,) = gateway.requests
    assert request.event_id == "ev-0001" and request.image == samples.jpeg()


@pytest.mark.parametrize(
    ("code", "details", "status", "healthy", "attempts"),
    [
        # the request is bad: never retried, no sign of an unhealthy gateway
        (grpc.StatusCode.INVALID_ARGUMENT, "image is not JPEG or PNG", "rejected", True, 1),
        # the VLM answered garbage twice (the gateway already retried it)
        (grpc.StatusCode.ABORTED, "the answer does not match the schema", "invalid_answer", True, 1),
        # the gateway's queue is full: no retry at once, counts against the breaker
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "the gateway is busy", "rate_limited", False, 1),
        # the model is not pulled
        (grpc.StatusCode.FAILED_PRECONDITION, "model 'llava:7b' not found", "unavailable", False, 1),
        # the model cannot serve on the gateway's host: permanent, never retried
        (grpc.StatusCode.FAILED_PRECONDITION, "model 'llava:7b' does not fit this host's memory", "unavailable",
         False, 1),
        # the model is still loading in Ollama: retried once, then the reason says "loading"
        (grpc.StatusCode.UNAVAILABLE, "loading: Ollama is loading model 'llava:7b' (12 s so far)", "unavailable",
         False, 2),
        # Ollama is down: retried once (the service config's retry policy), then given up
        (grpc.StatusCode.UNAVAILABLE, "Ollama is unreachable", "unavailable", False, 2),
        # a bug in the gateway
        (grpc.StatusCode.INTERNAL, "the gateway failed on this request", "unavailable", False, 1),
        # an old gateway without the method
        (grpc.StatusCode.UNIMPLEMENTED, "Method not found", "unavailable", False, 1),
    ],
)
def test_status_codes_map_to_escalation_statuses(gateway: ScriptedGateway, code: grpc.StatusCode, details: str,
                                                 status: str, healthy: bool, attempts: int) -> None:
    gateway.behave = lambda request: Fail(code, details)
    (result,) = describe(EscalationConfig(gateway=gateway.address))
    assert (result.status, result.healthy, result.answer) == (status, healthy, None)
    assert result.reason == f"{code.name}: {details}" and result.code == code.name
    assert gateway.calls() == attempts


def test_an_unavailable_answer_retried_once_can_succeed(gateway: ScriptedGateway) -> None:
    outcomes = iter([Fail(grpc.StatusCode.UNAVAILABLE, "blip"), reply()])
    gateway.behave = lambda request: next(outcomes)
    (result,) = describe(EscalationConfig(gateway=gateway.address))
    assert result.status == "answered" and gateway.calls() == 2


def test_an_answer_without_a_verdict_is_invalid(gateway: ScriptedGateway) -> None:
    gateway.behave = lambda request: pb.DescribeResponse(description="no verdict")
    (result,) = describe(EscalationConfig(gateway=gateway.address))
    assert (result.status, result.healthy) == ("invalid_answer", True)
    assert result.reason == "the gateway's answer has no verdict"


def test_a_message_too_large_for_the_gateway_is_rejected_not_retried() -> None:
    with ScriptedGateway(max_receive_bytes=4096) as gw:  # gRPC's own limit, far below the 30 kB JPEG
        (result,) = describe(EscalationConfig(gateway=gw.address))
        assert gw.calls() == 0
    assert (result.status, result.healthy, result.code) == ("rejected", True, "RESOURCE_EXHAUSTED")
    assert result.reason is not None and "Received message larger than max" in result.reason


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER: Received message larger than max (5000005 vs. 4194304)",
         ("rejected", True)),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!", ("rate_limited", False)),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", ("timeout", False)),
        (grpc.StatusCode.CANCELLED, "cancelled", ("unavailable", True)),
        (grpc.StatusCode.UNAUTHENTICATED, "no client certificate", ("unavailable", False)),
        (grpc.StatusCode.NOT_FOUND, "no such template", ("rejected", True)),
    ],
)
def test_classify(code: grpc.StatusCode, details: str, expected: tuple[str, bool]) -> None:
    assert classify(code, details) == expected


def test_a_slow_gateway_ends_in_timeout_at_the_deadline(gateway: ScriptedGateway) -> None:
    gateway.behave = lambda request: Hang()
    started = time.monotonic()
    (result,) = describe(EscalationConfig(gateway=gateway.address), timeout=0.5)
    elapsed = time.monotonic() - started
    assert (result.status, result.healthy, result.code) == ("timeout", False, "DEADLINE_EXCEEDED")
    assert result.reason is not None and result.reason.startswith("DEADLINE_EXCEEDED: no answer within 0.5 s")
    assert 0.4 < elapsed < 3.0 and gateway.calls() == 1  # a deadline is not retried


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_gateway_that_is_not_there_is_unavailable_at_once() -> None:
    started = time.monotonic()
    (result,) = describe(EscalationConfig(gateway=f"127.0.0.1:{free_port()}"), timeout=5.0)
    assert (result.status, result.healthy, result.code) == ("unavailable", False, "UNAVAILABLE")
    assert time.monotonic() - started < 3.0  # fails fast (no wait_for_ready), well before the deadline


def test_a_gateway_that_comes_back_is_used_again(gateway: ScriptedGateway) -> None:
    config = EscalationConfig(gateway=gateway.address)

    async def run() -> list[str]:
        client = EscalationClient.connect(config)
        statuses = [(await client.describe(samples.request(), 2.0)).status]
        gateway.stop()
        statuses.append((await client.describe(samples.request(), 2.0)).status)
        gateway.start()  # the same port
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the channel reconnects within its capped backoff (5 s)
            status = (await client.describe(samples.request(), 2.0)).status
            if status == "answered":
                break
            await asyncio.sleep(0.1)
        statuses.append(status)
        await client.close()
        return statuses

    assert asyncio.run(run()) == ["answered", "unavailable", "answered"]


def test_a_gateway_whose_health_is_not_serving_is_not_called(gateway: ScriptedGateway) -> None:
    gateway.set_health(False)
    (result,) = describe(EscalationConfig(gateway=gateway.address))
    assert result.status == "unavailable" and gateway.calls() == 0
    assert result.reason is not None and "health service says NOT_SERVING" in result.reason
    (result,) = describe(EscalationConfig(gateway=gateway.address, health_check=False))
    assert result.status == "answered" and gateway.calls() == 1  # without health checking it is called


def test_round_robin_over_a_comma_list_of_gateways() -> None:
    with ScriptedGateway() as a, ScriptedGateway() as b:
        config = EscalationConfig(gateway=f"127.0.0.1:{a.port},127.0.0.1:{b.port}")
        assert config.target == f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}"
        # round robin picks among READY subchannels: on a loaded box the second may connect (and pass
        # its health check) a few calls after the first, so give it enough calls to show the spread
        results = describe(config, calls=40)
        assert all(r.status == "answered" for r in results)
        assert a.calls() >= 5 and b.calls() >= 5 and a.calls() + b.calls() == 40


def test_a_unix_socket_gateway(tmp_path: pathlib.Path) -> None:
    with ScriptedGateway(unix_path=str(tmp_path / "gw.sock")) as gw:
        (result,) = describe(EscalationConfig(gateway=gw.address))
    assert result.status == "answered" and gw.address.startswith("unix:")


def test_channel_options_agree_with_the_gateways_keepalive_policy() -> None:
    options = dict(channel_options(EscalationConfig(gateway="gw:50061")))
    # the gateway allows a ping every 10 s without calls (agent.gateway.server)
    assert options["grpc.keepalive_time_ms"] >= 10_000 and options["grpc.keepalive_permit_without_calls"] == 1
    service_config = json.loads(options["grpc.service_config"])
    assert service_config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert service_config["healthCheckConfig"] == {"serviceName": "edge_agent.v1.Escalation"}
    policy = service_config["methodConfig"][0]["retryPolicy"]
    assert policy["maxAttempts"] == 2 and policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert "healthCheckConfig" not in json.loads(dict(channel_options(
        EscalationConfig(gateway="gw:50061", health_check=False)))["grpc.service_config"])


def ec_key(path: pathlib.Path) -> list[str]:
    """openssl arguments for a new P-256 key (much quicker to make than RSA on a busy 2-core box)."""
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(path)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[pathlib.Path, pathlib.Path]]:
    d = tmp_path_factory.mktemp("agent-pki")
    ca = d / "ca.key", d / "ca.crt"
    run(["openssl", "req", "-x509", *ec_key(ca[0]), "-out", str(ca[1]), "-days", "2", "-subj", "/CN=test-ca"])
    out = {"ca": ca}
    for name, san in (("server", "DNS:gateway.local"), ("client", None)):
        key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
        run(["openssl", "req", *ec_key(key), "-out", str(csr), "-subj", f"/CN={name}"])
        cmd = ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
               "-CAcreateserial", "-out", str(cert), "-days", "2"]
        if san:
            (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
            cmd += ["-extfile", str(d / f"{name}.ext")]
        run(cmd)
        out[name] = key, cert
    return out


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def test_mutual_tls_with_a_server_name_override(pki: dict[str, tuple[pathlib.Path, pathlib.Path]]) -> None:
    key, cert = pki["server"]
    server_creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())],
                                               root_certificates=pki["ca"][1].read_bytes(), require_client_auth=True)
    with ScriptedGateway(credentials=server_creds) as gw:
        tls = {"ca_file": pki["ca"][1], "cert_file": pki["client"][1], "key_file": pki["client"][0],
               "server_name": "gateway.local"}  # dialled as 127.0.0.1, the certificate names gateway.local
        config = EscalationConfig.model_validate({"gateway": gw.address, "tls": tls})
        assert config.tls is not None
        (ok,) = describe(config, credentials=channel_credentials(config.tls))
        assert ok.status == "answered"
        anonymous = EscalationConfig.model_validate({"gateway": gw.address, "tls": {
            "ca_file": pki["ca"][1], "server_name": "gateway.local"}})
        assert anonymous.tls is not None
        (refused,) = describe(anonymous, credentials=channel_credentials(anonymous.tls))
        assert refused.status == "unavailable"  # no client certificate: the handshake fails


def test_unreadable_tls_files_name_the_field(tmp_path: pathlib.Path) -> None:
    config = EscalationConfig.model_validate({"gateway": "gw:1", "tls": {"ca_file": tmp_path / "missing.pem"}})
    assert config.tls is not None
    with pytest.raises(ConfigError, match=r"escalation\.tls\.ca_file: cannot read .*missing\.pem"):
        channel_credentials(config.tls)
    (tmp_path / "notpem.crt").write_text("hello")
    config = EscalationConfig.model_validate({"gateway": "gw:1", "tls": {"ca_file": tmp_path / "notpem.crt"}})
    assert config.tls is not None
    with pytest.raises(ConfigError, match="is not PEM"):
        channel_credentials(config.tls)
