"""``edge-agent fleet ...``: one model to many boxes over the plant's MQTT broker (:mod:`agent.tooling.fleet`).

Argument parsing only; errors reach the one boundary of :mod:`agent.cli.boundary`.
"""

from __future__ import annotations

import os
import pathlib
import signal
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from agent.cli.models import (
    _config_path,
    _ConfigOption,
    _HealthOption,
    _KeepOption,
    _PidFileOption,
    _ReloadOption,
    _UnitOption,
    _WaitOption,
)
from agent.errors import EdgeAgentError

if TYPE_CHECKING:
    from agent.tooling.fleet.bus import FleetBus
    from agent.tooling.fleet.manifest import Manifest

__all__ = ["fleet_app"]

fleet_app = typer.Typer(no_args_is_help=True, help=(
    "Fleet model rollout: a canary box first, then the rest, over the plant broker; roll back fleet-wide."))

_ManifestArg = Annotated[pathlib.Path, typer.Argument(help="rollout manifest (YAML): broker, secret_file, model "
                                                           "(source, sha256), boxes, canary, gate, watch")]


def _open_bus(url: str, client_id: str, username: str | None, password_file: pathlib.Path | None,
              topics: list[str]) -> FleetBus:
    from agent.publish.tail import broker_login
    from agent.tooling.fleet.bus import FleetBus

    user, password = broker_login(username, password_file, {})
    bus = FleetBus(url, client_id, user, password)
    bus.open(topics)
    return bus


def _fleet(manifest_path: pathlib.Path, what: str) -> tuple[Manifest, FleetBus, bytes]:
    from agent.tooling.fleet import wire
    from agent.tooling.fleet.manifest import load_manifest
    from agent.tooling.fleet.signing import read_key

    manifest = load_manifest(manifest_path)
    key = read_key(manifest.secret_file)
    b = manifest.broker
    bus = _open_bus(b.url, f"edge-agent-fleet-{what}-{os.getpid()}", b.username, b.password_file,
                    [wire.reply_topic(b.topic_prefix, d) for d in manifest.boxes])
    return manifest, bus, key


@fleet_app.command("rollout")
def fleet_rollout(manifest: _ManifestArg) -> None:
    """Promote the manifest's model on the canary box, then, if it passed, on every other box.

    Every box must answer first (else nothing changes). Exit 0 all done; 1 the canary refused it (gate, digest,
    escalation watch; nothing else changed); 2 bad input or a box out of reach; 3 partial (the table says which)."""
    from agent.tooling.fleet.rollout import Fleet, run_rollout

    m, bus, key = _fleet(manifest, "rollout")
    try:
        code = run_rollout(m, Fleet(m, key, bus, typer.echo))
    finally:
        bus.close()
    raise typer.Exit(code)


@fleet_app.command("rollback")
def fleet_rollback(manifest: _ManifestArg) -> None:
    """Put every box that runs the manifest's model back on the model it ran before (the others are left).

    Exit 0 when every box answered; 3 when some did not or failed (the table says which)."""
    from agent.tooling.fleet.rollout import Fleet, run_rollback

    m, bus, key = _fleet(manifest, "rollback")
    try:
        code = run_rollback(m, Fleet(m, key, bus, typer.echo))
    finally:
        bus.close()
    raise typer.Exit(code)


@fleet_app.command("serve")
def fleet_serve(
    val: Annotated[pathlib.Path, typer.Option(help="this box's held-out labelled set for the promote gate")],
    secret_file: Annotated[pathlib.Path, typer.Option(help="the fleet key (first line), as the manifest's")],
    config: _ConfigOption = None,
    reload: _ReloadOption = True,
    unit: _UnitOption = None,
    pid_file: _PidFileOption = None,
    health: _HealthOption = None,
    wait: _WaitOption = 60.0,
    keep: _KeepOption = 5,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime intra-op threads while evaluating")] = 2,
) -> None:
    """Take fleet commands for this box (device_id of --config) from its broker, one at a time, until stopped."""
    from agent import logs
    from agent.config.loader import load_config
    from agent.tooling.fleet import wire
    from agent.tooling.fleet.box import BoxServer, BoxSettings, serve
    from agent.tooling.fleet.signing import read_key
    from agent.tooling.promote import AgentTarget

    path = _config_path(config)
    if path is None:
        raise EdgeAgentError("give --config: the agent's config names this box (device_id), its broker and model")
    cfg = load_config(path)
    logs.configure(cfg.logging.level, cfg.logging.json_format)  # the agent's logging settings: the same journal
    target = AgentTarget(reload=reload, unit=unit, pid_file=pid_file, health=health, wait_s=wait)
    settings = BoxSettings(config=path, val=val, key=read_key(secret_file), target=target, keep=keep,
                           threads=threads)
    server = BoxServer(settings, cfg.device_id, cfg.model.path)
    prefix = cfg.mqtt.topic_prefix
    bus = _open_bus(cfg.mqtt.url, f"edge-agent-fleet-{cfg.device_id}", cfg.mqtt.username, cfg.mqtt.password_file,
                    [wire.command_topic(prefix, cfg.device_id)])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    typer.echo(f"fleet serve: {cfg.device_id} listens on {wire.command_topic(prefix, cfg.device_id)}", err=True)
    try:
        serve(server, bus, prefix, stop)
    finally:
        bus.close()
