"""Model-level coercions that the YAML and environment paths rely on."""

from __future__ import annotations

import pathlib
import re

import pytest

from agent.config.models import AgentConfig, MqttConfig, OutboxConfig


@pytest.mark.parametrize(("given", "stored"), [(5, "5"), ("5", "5"), ("3.1.1", "3.1.1")])
def test_protocol_accepts_the_unquoted_number(given, stored):
    assert MqttConfig(protocol=given).protocol == stored


def test_broker_host_and_port_from_url():
    m = MqttConfig(url="mqtts://broker.plant:8884")
    assert (m.host, m.port) == ("broker.plant", 8884)
    assert MqttConfig(url="mqtts://b").port == 8883 and MqttConfig(url="mqtt://b").port == 1883


def test_device_id_defaults_to_a_topic_safe_hostname():
    cfg = AgentConfig()
    assert cfg.device_id and not any(c in cfg.device_id for c in "/+# ")


@pytest.mark.parametrize(
    ("mqtt", "message"),
    [
        ({"url": "mqtt://"}, "is not a broker URL"),  # no host
        ({"url": "tcp://broker:1883"}, "is not a broker URL; expected mqtt://HOST[:PORT]"),  # wrong scheme
        ({"url": "mqtt://broker:99999"}, "has an invalid port"),  # port out of range
        ({"url": "mqtt://broker:abc"}, "has an invalid port"),  # port not a number
        ({"topic_prefix": "edge/#"}, "without '+', '#'"),  # a wildcard in the prefix
        ({"topic_prefix": "plant/+/x"}, "without '+', '#'"),
        ({"topic_prefix": "/edge"}, "leading/trailing '/'"),
        ({"password_file": "/x"}, "a password needs a username"),
        ({"username": "u", "password_file": "/x", "password_credential": "mqtt"}, "not both"),
        ({"tls": {"ca_file": "/ca.pem"}}, "the url is not mqtts://"),  # TLS settings on a plain URL
        ({"url": "mqtts://b", "tls": {"cert_file": "/c.pem"}}, "cert_file and key_file go together"),
    ],
)
def test_bad_mqtt_settings_say_what_is_wrong(mqtt: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=re.escape(message)):
        MqttConfig(**mqtt)


@pytest.mark.parametrize(
    ("outbox", "message"),
    [
        ({"max_rows": 0}, "greater than or equal to 1"),
        ({"max_bytes": 10}, "greater than or equal to 1024"),
        ({"synchronous": "sometimes"}, "'normal' or 'full'"),
    ],
)
def test_bad_outbox_settings(outbox: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=re.escape(message)):
        OutboxConfig(**outbox)


def test_runtime_paths_come_from_systemd_directories(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from agent.config.loader import resolve_runtime_paths

    creds = tmp_path / "creds"
    cfg = AgentConfig(mqtt=MqttConfig(username="edge", password_credential="mqtt-password"))
    got = resolve_runtime_paths(cfg, {"STATE_DIRECTORY": "/var/lib/edge-agent:/var/lib/other",
                                      "CREDENTIALS_DIRECTORY": str(creds)})
    assert got.outbox.path == pathlib.Path("/var/lib/edge-agent/outbox.sqlite")
    assert got.mqtt.password_file == creds / "mqtt-password"


def test_a_credential_without_credentials_directory_is_a_config_error() -> None:
    from agent.config.loader import resolve_runtime_paths
    from agent.errors import ConfigError

    cfg = AgentConfig(mqtt=MqttConfig(username="edge", password_credential="mqtt-password"))
    with pytest.raises(ConfigError, match=r"\$CREDENTIALS_DIRECTORY is not set; add LoadCredential=mqtt-password"):
        resolve_runtime_paths(cfg, {})
