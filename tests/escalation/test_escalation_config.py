"""The agent's ``escalation:`` config section: defaults, gateway targets, deadlines, per-camera rates, TLS paths."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from agent.config import load_config
from agent.config.escalation import EscalationConfig, grpc_target
from agent.config.models import AgentConfig
from agent.errors import ConfigError


def test_defaults_leave_escalation_off() -> None:
    esc = AgentConfig().escalation
    assert esc.gateway is None and esc.target is None
    assert (esc.template_id, esc.publish_deadline_s, esc.call_deadline_s) == ("inspect-v1", 2.0, 15.0)
    assert (esc.max_in_flight, esc.queue_size, esc.image_max_side) == (4, 16, 672)
    assert (esc.rate_per_camera.per_minute, esc.rate_per_camera.burst) == (30.0, 5)
    assert (esc.breaker.failure_threshold, esc.breaker.open_s) == (5, 10.0)
    assert esc.dedupe.enabled and esc.dedupe.max_distance == 6 and esc.health_check and esc.tls is None


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("gateway.local:50061", "gateway.local:50061"),  # one gateway by name
        ("10.0.0.5:50061", "10.0.0.5:50061"),
        ("[::1]:50061", "[::1]:50061"),
        ("10.0.0.5:50061, 10.0.0.6:50061", "ipv4:10.0.0.5:50061,10.0.0.6:50061"),  # round_robin over both
        ("[fd00::5]:1,[fd00::6]:1", "ipv6:[fd00::5]:1,[fd00::6]:1"),
        ("dns:///gateways.plant:50061", "dns:///gateways.plant:50061"),  # every address of the name
        ("unix:/run/edge-agent/gateway.sock", "unix:/run/edge-agent/gateway.sock"),
    ],
)
def test_gateway_targets(value: str, target: str) -> None:
    assert grpc_target(value) == target
    assert EscalationConfig(gateway=value).target == target


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gateway.local", "'gateway.local' is not HOST:PORT (a port from 1 to 65535 is required)"),
        ("gw:0", "is not HOST:PORT"),
        ("gw-a:1,gw-b:1", "a comma list takes IP:PORT items only; for host names use dns:///NAME:PORT"),
        ("10.0.0.1:1,[::1]:1", "mixes IPv4 and IPv6"),
        ("::1:50061", "write an IPv6 address in brackets"),
        ("unix:", "names no address after unix:"),
        ("  ", "the gateway address is empty"),
    ],
)
def test_bad_gateway_targets_say_what_is_expected(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        grpc_target(value)


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: pathlib.Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return info.value.problems


def test_problems_name_the_field_and_line(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, """\
        escalation:
          gateway: gw-a:1,gw-b:1
          publish_deadline_s: 5
          call_deadline_s: 2
          queue_size: 0
          colour: red
        """)
    found = problems(path)
    assert ("escalation.gateway (line 2): 'gw-a:1' in 'gw-a:1,gw-b:1': a comma list takes IP:PORT items only; for "
            "host names use dns:///NAME:PORT (a name with several addresses)") in found
    assert any(p.startswith("escalation.queue_size (line 5): Input should be greater than or equal to 1")
               for p in found)
    assert any(p.startswith("escalation.colour (line 6): unknown key; expected one of: gateway, template_id")
               for p in found)


def test_a_yaml_list_of_gateways_is_the_round_robin_comma_list(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "escalation:\n  gateway: ['10.0.0.5:50061', ' 10.0.0.6:50061']\n")
    esc = load_config(path, env={}).escalation
    assert (esc.gateway, esc.target) == ("10.0.0.5:50061,10.0.0.6:50061", "ipv4:10.0.0.5:50061,10.0.0.6:50061")


@pytest.mark.parametrize(
    ("items", "message"),
    [
        # a host name: gRPC's list form takes addresses; a name with several addresses is dns:///NAME:PORT
        ("['10.0.0.5:1', 'gw-b:1']", "gateway[1] 'gw-b:1': a gateway list takes IP:PORT items only; for host "
                                     "names use dns:///NAME:PORT"),
        # no port
        ("['10.0.0.5:1', '10.0.0.6']", "gateway[1] '10.0.0.6' is not HOST:PORT (a port from 1 to 65535 is required)"),
        # a resolver target inside a list
        ("['dns:///gw:1', '10.0.0.6:1']", "gateway[0] 'dns:///gw:1': a gateway list takes IP:PORT items only; give "
                                          "a dns: target alone"),
        # not text
        ("['10.0.0.5:1', 7]", "gateway[1] is 7; expected one IP:PORT per item"),
        ("[]", "the gateway list is empty"),
        ("['10.0.0.5:1', '[::1]:1']", "mixes IPv4 and IPv6"),
    ],
)
def test_a_bad_gateway_list_names_the_entry(tmp_path: pathlib.Path, items: str, message: str) -> None:
    (problem,) = problems(write(tmp_path, f"escalation:\n  gateway: {items}\n"))
    assert problem.startswith("escalation.gateway (line 2): ") and message in problem, problem


def test_the_call_deadline_may_not_be_shorter_than_the_publish_deadline(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "escalation:\n  gateway: gw:1\n  publish_deadline_s: 5\n  call_deadline_s: 2\n")
    (problem,) = problems(path)
    assert "call_deadline_s (2.0) must not be below publish_deadline_s (5.0)" in problem


def test_per_camera_rate_overrides_the_default(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, """\
        cameras:
          - {id: busy, source: synthetic://conveyor}
          - {id: quiet, source: synthetic://conveyor, escalation_rate: {per_minute: 0}}
        escalation:
          gateway: 127.0.0.1:50061
          rate_per_camera: {per_minute: 12, burst: 3}
        """)
    cfg = load_config(path, env={})
    busy, quiet = cfg.cameras
    assert (cfg.escalation_rate_for(busy).per_minute, cfg.escalation_rate_for(busy).burst) == (12.0, 3)
    assert (cfg.escalation_rate_for(quiet).per_minute, cfg.escalation_rate_for(quiet).burst) == (0.0, 5)


def test_tls_paths_are_relative_to_the_file_and_env_overrides_apply(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, """\
        escalation:
          gateway: 10.0.0.5:50061
          tls: {ca_file: pki/ca.pem, cert_file: pki/agent.pem, key_file: pki/agent.key, server_name: gw.plant}
        """)
    cfg = load_config(path, env={"EDGE_AGENT_ESCALATION__PUBLISH_DEADLINE_S": "1.5"})
    tls = cfg.escalation.tls
    assert tls is not None and tls.ca_file == tmp_path / "pki" / "ca.pem" and tls.key_file == tmp_path / "pki/agent.key"
    assert cfg.escalation.publish_deadline_s == 1.5


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        EscalationConfig.model_validate({"gateway": "gw:1", "tls": {"cert_file": "/a.pem"}})
