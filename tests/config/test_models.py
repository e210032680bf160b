"""Model-level coercions that the YAML and environment paths rely on."""

from __future__ import annotations

import pytest

from agent.config.models import AgentConfig, MqttConfig


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
