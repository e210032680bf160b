"""TLS and mutual TLS on the gateway's port, with certificates made at test time (openssl)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import grpc
import pytest

from agent.errors import GatewayError
from agent.wire import escalation_pb2 as pb
from agent.wire import escalation_pb2_grpc as pb_grpc
from tests.escalation import samples
from tests.fakes.gateway import GatewayThread, gateway_config
from tests.fakes.gateway_fixtures import StartGateway
from tests.fakes.ollama import FakeOllama
from tests.publish.test_faults import make_ca, make_signed

Pki = dict[str, tuple[pathlib.Path, pathlib.Path]]  # name -> (key, certificate)
Channels = Callable[..., grpc.Channel]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("gateway-pki")
    ca = make_ca(d, "test-ca")
    other = make_ca(d, "other-ca")
    return {"ca": ca, "other_ca": other, "server": make_signed(d, "gateway", ca, "IP:127.0.0.1,DNS:localhost"),
            "client": make_signed(d, "agent", ca, None), "stranger": make_signed(d, "stranger", other, None)}


def tls_section(pki: Pki, mutual: bool) -> dict[str, str]:
    section = {"cert_file": str(pki["server"][1]), "key_file": str(pki["server"][0])}
    if mutual:
        section["client_ca_file"] = str(pki["ca"][1])
    return section


def credentials(pki: Pki, ca: str = "ca", client: str | None = None) -> grpc.ChannelCredentials:
    key, cert = (pki[client][0].read_bytes(), pki[client][1].read_bytes()) if client else (None, None)
    return grpc.ssl_channel_credentials(root_certificates=pki[ca][1].read_bytes(), private_key=key,
                                        certificate_chain=cert)


def call(channel: grpc.Channel) -> pb.DescribeResponse:
    return pb_grpc.EscalationStub(channel).Describe(samples.request(), timeout=10)


def test_tls_with_the_gateways_ca(start_gateway: StartGateway, channels: Channels, pki: Pki) -> None:
    gw = start_gateway(tls=tls_section(pki, mutual=False))
    assert call(channels(gw.address, credentials(pki))).verdict == pb.VERDICT_DEFECT


def test_tls_refuses_a_client_that_does_not_trust_the_gateway(start_gateway: StartGateway, channels: Channels,
                                                              pki: Pki) -> None:
    gw = start_gateway(tls=tls_section(pki, mutual=False))
    with pytest.raises(grpc.RpcError) as info:
        call(channels(gw.address, credentials(pki, ca="other_ca")))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as plain:
        call(channels(gw.address))  # plain text to a TLS port
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate_from_the_ca(start_gateway: StartGateway, channels: Channels,
                                                           pki: Pki) -> None:
    gw = start_gateway(tls=tls_section(pki, mutual=True), listen="0.0.0.0:0")  # authenticated: may listen wide
    assert call(channels(gw.address, credentials(pki, client="client"))).attempts == 1
    # the client is known by its certificate's common name, in the call counts (and logs, metrics)
    assert gw.server.stats.totals_by_client() == {("agent", "OK"): 1}  # type: ignore[union-attr]
    for client in (None, "stranger"):  # no certificate; one signed by another CA
        with pytest.raises(grpc.RpcError) as info:
            call(channels(gw.address, credentials(pki, client=client)))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, client


def test_missing_tls_files_are_a_clear_error(fake_ollama: FakeOllama, pki: Pki, tmp_path: pathlib.Path) -> None:
    config = gateway_config(fake_ollama.url, tls={"cert_file": str(pki["server"][1]),
                                                   "key_file": str(tmp_path / "nope.key")})
    with pytest.raises(GatewayError, match=r"tls.key_file: cannot read .*nope.key \(No such file"):
        GatewayThread(config).start()
    not_pem = tmp_path / "cert.txt"
    not_pem.write_text("hello")
    config = gateway_config(fake_ollama.url, tls={"cert_file": str(not_pem), "key_file": str(pki["server"][0])})
    with pytest.raises(GatewayError, match="tls.cert_file: .* is not PEM"):
        GatewayThread(config).start()
