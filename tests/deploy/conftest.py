"""The gateway fixtures (tests/fakes/gateway_fixtures.py) for the container health checks in this folder."""

from tests.fakes.gateway_fixtures import (  # noqa: F401 (pytest finds fixtures by name)
    _no_gateway_environment,
    fake_ollama,
    start_gateway,
)
