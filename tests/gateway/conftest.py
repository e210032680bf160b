"""The gateway fixtures (tests/fakes/gateway_fixtures.py) for the tests in this folder, and the systemd
notification socket of tests/health (the gateway under systemd)."""

from tests.fakes.gateway_fixtures import (  # noqa: F401 (pytest finds fixtures by name)
    _no_gateway_environment,
    channels,
    fake_ollama,
    gateway,
    start_gateway,
    stub,
)
from tests.health.conftest import abstract_notify_socket  # noqa: F401
