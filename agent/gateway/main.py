"""``edge-agent gateway``: run the escalation gateway until SIGTERM or SIGINT.

On a signal the health service turns NOT_SERVING first, calls in progress get
``shutdown_grace_s`` to finish, then the process exits 0. A config or start-up
problem (bad file, address in use, unreadable TLS files) is an EdgeAgentError:
the caller prints it and exits 2.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import signal

import typer

from agent import logs
from agent.errors import ConfigError
from agent.gateway.config import ENV_PREFIX, GatewayConfig, gateway_plaintext_channels, load_gateway_config
from agent.gateway.server import ollama_words, serve
from agent.gateway.supervision import GatewayHealth
from agent.ops.notify import Notifier

log = logging.getLogger(__name__)

_LEVELS = ("debug", "info", "warning", "error")
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"  # EDGE_GATEWAY_CONFIG names the config file when --config is not given


def run_gateway(config_path: pathlib.Path | None, log_level: str | None) -> None:
    """Load the config, configure logging and serve until a stop signal. Raises EdgeAgentError."""
    if log_level is not None and log_level not in _LEVELS:
        raise ConfigError([f"--log-level {log_level!r}: expected one of {', '.join(_LEVELS)}"], "command line")
    path = config_path or (pathlib.Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    config = load_gateway_config(path)
    logs.configure(log_level or config.logging.level, config.logging.json_format)
    for warning in gateway_plaintext_channels(config):  # once, at start
        log.warning(warning)
    asyncio.run(_serve_until_signal(config))


async def _serve_until_signal(config: GatewayConfig) -> None:
    server = await serve(config)
    observed = GatewayHealth(server, config, Notifier.from_environ())
    await observed.start()  # /metrics, READY=1 and the watchdog heartbeat (under systemd)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    health = "SERVING" if server.health.serving else f"NOT_SERVING: {server.health.reason}"
    typer.echo(f"edge-agent gateway: listening on {server.address}; Ollama {ollama_words(config)}, model "
               f"{config.ollama.model}; {health}"
               + (f"; metrics on {observed.metrics.url}/metrics" if observed.metrics is not None else ""), err=True)
    terminated = asyncio.ensure_future(server.wait_for_termination())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([terminated, stopping], return_when=asyncio.FIRST_COMPLETED)
    log.info("stop signal received; shutting down" if stopping.done() else "the gRPC server ended; shutting down",
             extra={"grace_s": config.shutdown_grace_s})
    await observed.stopping()
    await server.stop(config.shutdown_grace_s)
    observed.close()
    for task in (terminated, stopping):
        task.cancel()
    typer.echo(f"edge-agent gateway: stopped after {server.stats.total_calls} call(s)", err=True)

