"""The running agent, seen from ``models promote`` and ``models rollback``: find it (pid, unit or pid file),
check what it runs (``/healthz``), lock the model store, install new files and ask for a reload, then watch
that it runs them; a refused reload puts the previous files back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import typer

from agent.errors import EdgeAgentError

if TYPE_CHECKING:
    from agent.config.models import AgentConfig
    from agent.ops.control import HealthSnapshot, ReloadOutcome, ReloadRequest
    from agent.prefilter.store import ModelStore, StoredModel
    from agent.tooling.promote import AgentTarget

__all__ = ["EXIT_RELOAD_FAILED", "RunningAgent", "agent_notes", "find_agent", "model_store", "reload_agent",
           "swap_and_reload"]

EXIT_RELOAD_FAILED = 3


@dataclasses.dataclass(frozen=True)
class RunningAgent:
    request: ReloadRequest
    health_url: str | None
    no_health: str  # why health_url is None


def find_agent(target: AgentTarget, cfg: AgentConfig) -> RunningAgent | None:
    """How to reach the running agent (None with --no-reload); EdgeAgentError when it cannot be found."""
    from agent.ops.control import SignalReload, SystemdReload, check_agent_pid, find_agent_pid, health_url

    if not target.reload:
        return None
    request: ReloadRequest
    if target.unit is not None:
        request = SystemdReload(target.unit)
    elif target.pid is not None:
        check_agent_pid(target.pid, "--pid")
        request = SignalReload(target.pid, "--pid")
    else:
        pid, where = find_agent_pid(target.pid_file, os.environ)
        request = SignalReload(pid, where)
    url, why = (target.health, "") if target.health else health_url(cfg.metrics)
    return RunningAgent(request, url, why)


def agent_notes(agent: RunningAgent | None, running: str) -> list[str]:
    """Warnings when /healthz does not answer, or says the agent runs something else than model.path."""
    from agent.ops.control import HealthProbe

    if agent is None or agent.health_url is None:
        return []
    now = HealthProbe(agent.health_url).read()
    if now is None:
        return [f"warning: the agent's {agent.health_url} does not answer; the reload cannot be confirmed "
                "(give --health URL if it listens elsewhere)"]
    if now.model_id != running:
        return [f"warning: the agent at {agent.health_url} runs {now.model_id}, not {running} (the model at "
                "model.path): another config, or a file changed without a reload?"]
    return []


def reload_agent(agent: RunningAgent, expected: str, wait_s: float) -> tuple[ReloadOutcome | None, str]:
    """Ask the agent to reload and watch it: (outcome, a line to print); outcome None when it cannot be seen."""
    from agent.ops.control import HealthProbe, wait_for_model

    probe = HealthProbe(agent.health_url) if agent.health_url else None
    before: HealthSnapshot | None = probe.read() if probe is not None else None
    agent.request.send()
    if probe is None:
        return None, (f"reload requested ({agent.request.describe()}); not verified: {agent.no_health}. Check the "
                      f"agent's log for 'model file changed on disk, reloaded'")
    outcome = wait_for_model(probe.read, expected, before, wait_s)
    return outcome, f"reload ({agent.request.describe()}): {outcome.detail}"


@contextlib.contextmanager
def model_store(model_path: pathlib.Path, keep: int) -> Iterator[ModelStore]:
    from agent.prefilter.store import ModelStore

    try:
        store = ModelStore(model_path, keep=keep)
    except ValueError as exc:
        raise EdgeAgentError(f"--keep: {exc}") from None
    with store.locked():
        yield store


def swap_and_reload(store: ModelStore, saved: StoredModel | None, new_files: Any, expected: str,
                     agent: RunningAgent | None, wait_s: float, no_reload: str = "--no-reload") -> tuple[int, str]:
    """Install ``new_files`` over the model (``saved`` holds what ran; None: there was no file), reload,
    verify. (exit code, reload state for the log). A refused reload puts ``saved`` back."""
    store.install(new_files)
    kept = f"previous kept in {saved.folder}" if saved is not None else "there was no file before"
    typer.echo(f"installed: {store.model_path} is now {expected} ({kept})")
    if agent is None:
        typer.echo(f"not reloaded ({no_reload}): the agent loads the new model at its next SIGHUP or start")
        return 0, "not requested"
    try:
        outcome, line = reload_agent(agent, expected, wait_s)
    except EdgeAgentError as exc:
        typer.echo(f"edge-agent: error: {exc}; the new files stay in place (roll back with "
                   "`edge-agent models rollback`)", err=True)
        return EXIT_RELOAD_FAILED, "request failed"
    if outcome is None:
        typer.echo(line)
        return 0, "not verified"
    if outcome.ok:
        typer.echo(line)
        return 0, outcome.state
    typer.echo(f"edge-agent: error: {line}", err=True)
    if outcome.state == "refused" and saved is not None:
        store.install(saved.files())
        typer.echo(f"put back {saved.model_id} at {store.model_path} (the agent still runs it)", err=True)
    else:
        typer.echo("the new files stay in place; check the agent (`edge-agent doctor`, its log), or roll back "
                   "with `edge-agent models rollback`", err=True)
    return EXIT_RELOAD_FAILED, outcome.state
