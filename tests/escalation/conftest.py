"""The gateway fixtures (tests/fakes/gateway_fixtures.py) for the tests in this folder."""

from tests.fakes.gateway_fixtures import (  # noqa: F401 (pytest finds fixtures by name)
    _no_gateway_environment,
    channels,
    fake_ollama,
    gateway,
    start_gateway,
    stub,
)
