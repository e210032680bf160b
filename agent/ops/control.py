"""Reaching a running agent from another process: its pid file, asking it to reload, and watching
``/healthz`` to see what it runs afterwards.

``edge-agent run`` writes its pid to ``<state dir>/edge-agent.pid`` (``$STATE_DIRECTORY`` under systemd,
else ``$XDG_STATE_HOME/edge-agent`` or ``~/.local/state/edge-agent``) once its SIGHUP handler is in
place, and removes it when it exits. Under the shipped unit that is ``/var/lib/edge-agent/edge-agent.pid``.

A reload is asked for in one of two ways, each behind :class:`ReloadRequest`: SIGHUP to a pid (given,
or read from the pid file and checked to be an ``edge-agent run`` process: a stale pid file must not
make us signal a stranger), or ``systemctl reload <unit>`` (the unit's ``ExecReload=`` sends SIGHUP).

Whether it worked is read from the agent's ``/healthz`` (``metrics.listen``): ``model.id`` names the
model it runs (``<file stem>@<sha256[:12]>``) and ``last_reload`` what its last reload did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Literal, Protocol

from agent.config.loader import default_state_dir
from agent.config.models import MetricsConfig
from agent.errors import EdgeAgentError

__all__ = ["PID_FILE_NAME", "HealthProbe", "ReloadOutcome", "ReloadRequest", "SignalReload", "SystemdReload",
           "find_agent_pid", "health_url", "remove_pid_file", "wait_for_model", "write_pid_file"]

log = logging.getLogger(__name__)

PID_FILE_NAME = "edge-agent.pid"
SYSTEMD_STATE_DIR = pathlib.Path("/var/lib/edge-agent")  # StateDirectory=edge-agent in systemd/edge-agent.service


# -- the pid file (written by `edge-agent run`) ------------------------------------------------------------


def write_pid_file(state_dir: pathlib.Path) -> pathlib.Path | None:
    """Write this process's pid to ``state_dir/edge-agent.pid``; None (and a warning) when it cannot."""
    path = state_dir / PID_FILE_NAME
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{PID_FILE_NAME}.{os.getpid()}.tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the pid file %s (%s); `edge-agent models promote` then needs --pid or --unit",
                    path, exc.strerror or exc)
        return None
    return path


def remove_pid_file(path: pathlib.Path | None) -> None:
    """Remove the pid file if it still names this process (another agent may have started since)."""
    if path is None:
        return
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()


def pid_file_candidates(env: Mapping[str, str]) -> list[pathlib.Path]:
    """Where ``edge-agent run`` leaves its pid file: this environment's state dir, then the systemd unit's."""
    found = [default_state_dir(env) / PID_FILE_NAME]
    if SYSTEMD_STATE_DIR / PID_FILE_NAME not in found:
        found.append(SYSTEMD_STATE_DIR / PID_FILE_NAME)
    return found


def _is_edge_agent_run(pid: int) -> bool | None:
    """True when /proc says ``pid`` runs ``edge-agent run``; None where /proc is not there to ask."""
    cmdline = pathlib.Path(f"/proc/{pid}/cmdline")
    if not pathlib.Path("/proc/self/cmdline").exists():
        return None
    try:
        args = [a.decode(errors="replace") for a in cmdline.read_bytes().split(b"\0") if a]
    except OSError:
        return False
    named = any(a.endswith("edge-agent") or a == "agent.cli.main" or a.endswith("agent/cli/main.py") for a in args)
    return named and "run" in args


def check_agent_pid(pid: int, where: str) -> None:
    """EdgeAgentError unless ``pid`` is a live process we may signal that runs ``edge-agent run``."""
    if pid <= 1:
        raise EdgeAgentError(f"{where}: pid {pid} is not an agent process; expected the pid of `edge-agent run`")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise EdgeAgentError(f"{where}: no process {pid} is running; is the agent running? (give --pid, --unit, "
                             "or --no-reload to only replace the file)") from None
    except PermissionError:
        raise EdgeAgentError(f"{where}: not allowed to signal process {pid}; run this as the agent's user or root, "
                             "or use --unit to go through systemd") from None
    if _is_edge_agent_run(pid) is False:
        raise EdgeAgentError(f"{where}: process {pid} is not `edge-agent run` (a stale pid file?); give --pid or "
                             "--unit")


def find_agent_pid(pid_file: pathlib.Path | None, env: Mapping[str, str]) -> tuple[int, str]:
    """(pid, where it came from) of the running agent, from ``pid_file`` or the usual places."""
    paths = [pid_file] if pid_file is not None else pid_file_candidates(env)
    for path in paths:
        if not path.is_file():
            continue
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise EdgeAgentError(f"pid file {path}: expected the agent's pid, one number ({exc})") from None
        check_agent_pid(pid, f"pid file {path}")
        return pid, f"pid file {path}"
    raise EdgeAgentError("no running agent found: no pid file at " + " or ".join(str(p) for p in paths)
                         + " (`edge-agent run` writes it). Give --pid PID or --unit UNIT, or --no-reload to only "
                         "replace the file (the agent loads it at its next start or SIGHUP)")


# -- asking for a reload ----------------------------------------------------------------------------------


class ReloadRequest(Protocol):
    def describe(self) -> str: ...
    def send(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class SignalReload:
    pid: int
    source: str

    def describe(self) -> str:
        return f"SIGHUP to pid {self.pid} ({self.source})"

    def send(self) -> None:
        try:
            os.kill(self.pid, signal.SIGHUP)
        except OSError as exc:
            raise EdgeAgentError(f"cannot signal the agent (pid {self.pid}): {exc.strerror or exc}") from exc


@dataclasses.dataclass(frozen=True)
class SystemdReload:
    unit: str

    def describe(self) -> str:
        return f"systemctl reload {self.unit}"

    def send(self) -> None:
        try:
            proc = subprocess.run(["systemctl", "reload", self.unit], capture_output=True, text=True, timeout=120,
                                  stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EdgeAgentError(f"systemctl reload {self.unit} failed: {exc}") from exc
        if proc.returncode != 0:
            raise EdgeAgentError(f"systemctl reload {self.unit} exited {proc.returncode}: "
                                 f"{(proc.stderr or proc.stdout).strip() or 'no message'}")


# -- watching /healthz --------------------------------------------------------------------------------------


def health_url(metrics: MetricsConfig) -> tuple[str | None, str]:
    """(``http://HOST:PORT/healthz``, "") from the config's metrics endpoint, or (None, why there is none)."""
    if not metrics.enabled:
        return None, "the config's metrics endpoint is off (metrics.enabled: false)"
    host, _sep, port = metrics.listen.rpartition(":")
    if int(port) == 0:
        return None, f"metrics.listen {metrics.listen} picks a random port; give --health URL"
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    return f"http://{host}:{port}/healthz", ""


@dataclasses.dataclass(frozen=True)
class HealthSnapshot:
    model_id: str | None
    last_reload: str | None


class HealthProbe:
    """``GET /healthz`` of a running agent."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def read(self) -> HealthSnapshot | None:
        """What the agent says, or None when it does not answer (or answers something else)."""
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as reply:  # noqa: S310 (http only)
                body = reply.read()
        except urllib.error.HTTPError as exc:  # 503 while unhealthy: the document is still there
            body = exc.read()
        except (OSError, ValueError):
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        model = doc.get("model")
        model_id = model.get("id") if isinstance(model, dict) else None
        note = doc.get("last_reload")
        return HealthSnapshot(model_id=str(model_id) if model_id else None,
                              last_reload=str(note) if note else None)


@dataclasses.dataclass(frozen=True)
class ReloadOutcome:
    state: Literal["confirmed", "refused", "other_model", "timeout"]
    detail: str

    @property
    def ok(self) -> bool:
        return self.state == "confirmed"


def wait_for_model(probe: Callable[[], HealthSnapshot | None], expected: str, before: HealthSnapshot | None,
                   timeout_s: float, *, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> ReloadOutcome:
    """Poll ``probe`` until the agent runs ``expected``, says its reload was refused, reloaded into another
    model, or ``timeout_s`` passed."""
    deadline = clock() + timeout_s
    last: HealthSnapshot | None = None
    while True:
        now = probe()
        if now is not None:
            last = now
            if now.model_id == expected:
                return ReloadOutcome("confirmed", f"the agent runs {expected}")
            new_note = now.last_reload is not None and (before is None or now.last_reload != before.last_reload)
            if new_note and "refused" in (now.last_reload or ""):
                return ReloadOutcome("refused", f"the agent refused the reload: {now.last_reload}")
            if new_note:
                return ReloadOutcome("other_model", f"the agent reloaded but runs {now.model_id}, not {expected} "
                                     f"({now.last_reload}); did its config change?")
        if clock() >= deadline:
            seen = "no answer from /healthz" if last is None else f"it still runs {last.model_id}"
            return ReloadOutcome("timeout", f"no reload seen within {timeout_s:g} s ({seen})")
        sleep(0.2)
