"""``edge-agent fleet serve``: the box's end of a fleet rollout, a small process beside ``edge-agent run``.

It holds its own MQTT session with the box's broker (the agent config's ``mqtt`` section and ``device_id``),
listens on ``<prefix>/<device>/fleet/command`` and takes one signed command at a time (:mod:`.wire`):

* ``ping``: what the box runs;
* ``promote``: fetch the model (:mod:`.fetch`; a digest mismatch is refused), then, with a watch window, read the
  agent's escalation counters for that long; run the box's own ``models promote`` gate on its held-out set
  (``--val``) and swap the model into the running agent (:mod:`agent.tooling.promote`); then watch the same
  window again: a rate that rose by more than allowed rolls the box back (``models rollback``);
* ``rollback``: ``models rollback`` when the box runs the model the rollout installed, else nothing.

It imports the offline tooling, so it is its own process (the agent's runtime never loads tooling).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import queue
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.errors import EdgeAgentError
from agent.tooling.fleet import wire
from agent.tooling.fleet.fetch import DigestMismatch, fetch_model
from agent.tooling.fleet.signing import sign, verify
from agent.tooling.fleet.watch import judge_watch, metrics_url, window
from agent.tooling.promote import AgentTarget, PromoteOptions, RollbackOptions, run_promote, run_rollback

__all__ = ["BoxServer", "BoxSettings", "serve"]

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]


@dataclasses.dataclass(frozen=True)
class BoxSettings:
    config: pathlib.Path
    val: pathlib.Path
    key: bytes
    target: AgentTarget = AgentTarget()
    keep: int = 5
    threads: int = 2


@dataclasses.dataclass
class _Outcome:
    state: wire.State
    detail: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _decision(report: pathlib.Path) -> dict[str, Any] | None:
    """The gate's decision from the promotion report (``promotion.json``), None where there is none."""
    try:
        doc = json.loads((report / "promotion.json").read_text())
    except (OSError, ValueError):
        return None
    decision = doc.get("decision") if isinstance(doc, dict) else None
    return decision if isinstance(decision, dict) else None


def _prune_reports(staging: pathlib.Path, keep: int) -> None:
    """Keep the newest ``keep`` promotion reports in the staging folder; a report that cannot be removed is said."""
    reports = sorted((p for p in staging.glob("promotion-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in reports[:-keep] if keep > 0 else reports:
        try:
            shutil.rmtree(old)
        except OSError as exc:
            log.warning("cannot remove the old promotion report %s: %s", old, exc)


def _gate_words(decision: dict[str, Any] | None, code: int) -> str:
    if decision is None:
        return f"the promotion stopped before the gate judged (exit {code}; see the box's log)"
    words = (f"gate {'accepted' if decision.get('accepted') else 'REFUSED'}: {decision.get('reason')} "
             f"({decision.get('metric')} current {decision.get('current')}, candidate {decision.get('candidate')})")
    return words if code in (0, 1) else f"{words}; then the reload failed (exit {code}; see the box's log)"


class BoxServer:
    """Handles one command at a time (:meth:`handle`); replies go through ``send`` (already signed)."""

    def __init__(self, settings: BoxSettings, device: str, model_path: pathlib.Path) -> None:
        self.settings = settings
        self.device = device
        self.model_path = model_path
        self.staging = model_path.parent / ".fleet"
        self._seen: dict[str, float] = {}

    # -- what the box runs -----------------------------------------------------------------------------------

    def running(self) -> dict[str, Any] | None:
        from agent.prefilter.model_info import file_digest

        if not self.model_path.is_file():
            return None
        sha = file_digest(self.model_path)
        return {"id": f"{self.model_path.stem}@{sha[:12]}", "sha256": sha}

    # -- one command -----------------------------------------------------------------------------------------

    def handle(self, payload: bytes, send: Send, received: float | None = None) -> None:
        """Check, run and answer one command (``received``: when it arrived; default now); a command that is not
        for us or not signed is answered refused."""
        try:
            cmd = verify(wire.parse(payload, "fleet command"), self.settings.key)
            self._admit(cmd, time.time() if received is None else received)
        except EdgeAgentError as exc:
            log.warning("fleet command refused: %s", exc)
            send(self._reply({}, "refused", str(exc)))
            return
        log.info("fleet command %s %s", cmd["action"], cmd["id"])
        if cmd["action"] == "ping":
            send(self._reply(cmd, "done", "ready"))
            return
        send(self._reply(cmd, "started", f"{cmd['action']} started"))
        try:
            outcome = self._promote(cmd) if cmd["action"] == "promote" else self._rollback(cmd)
        except DigestMismatch as exc:
            outcome = _Outcome("refused", str(exc))
        except EdgeAgentError as exc:
            outcome = _Outcome("failed", str(exc))
        log.info("fleet command %s %s: %s: %s", cmd["action"], cmd["id"], outcome.state, outcome.detail)
        send(self._reply(cmd, outcome.state, outcome.detail, **outcome.extra))

    def _admit(self, cmd: dict[str, Any], now: float) -> None:
        if cmd.get("device") != self.device:
            raise EdgeAgentError(f"the command is for device {cmd.get('device')!r}, this box is {self.device!r}")
        if cmd.get("action") not in wire.ACTIONS:
            raise EdgeAgentError(f"unknown action {cmd.get('action')!r}; expected one of {', '.join(wire.ACTIONS)}")
        issued = cmd.get("issued_at")
        if not isinstance(issued, (int, float)) or abs(now - issued) > wire.MAX_AGE_S:
            raise EdgeAgentError(f"the command was issued at {issued!r}, more than {wire.MAX_AGE_S:g} s from this "
                                 "box's clock (a replayed command, or the clocks differ: check NTP)")
        cmd_id = cmd.get("id")
        if not isinstance(cmd_id, str) or cmd_id in self._seen:
            raise EdgeAgentError(f"command id {cmd_id!r} was seen before (a replay) or is missing")
        self._seen = {k: t for k, t in self._seen.items() if now - t < 2 * wire.MAX_AGE_S}
        self._seen[cmd_id] = now

    def _reply(self, cmd: dict[str, Any], state: wire.State, detail: str, **extra: Any) -> dict[str, Any]:
        return sign(wire.reply(cmd, self.device, state, detail, self.running(), **extra), self.settings.key)

    # -- promote -----------------------------------------------------------------------------------------------

    def _promote(self, cmd: dict[str, Any]) -> _Outcome:
        sha, source = str(cmd.get("sha256", "")), str(cmd.get("source", ""))
        gate, watch = cmd.get("gate") or {}, cmd.get("watch") or {}
        now = self.running()
        if now is not None and now["sha256"] == sha:
            return _Outcome("done", f"already runs {now['id']}")
        staged = fetch_model(source, sha, self.staging)
        try:
            window_s, max_rise = float(watch.get("window_s", 0.0)), float(watch.get("max_rise", 0.0))
            url = self._metrics_url() if window_s > 0 else None
            before = window(url, window_s) if url is not None else None
            opts = PromoteOptions(candidate=staged, config=self.settings.config, val=self.settings.val,
                                  split=str(gate.get("split", "val")), margin=float(gate.get("margin", 0.01)),
                                  metric=gate.get("metric"), target=self.settings.target, keep=self.settings.keep,
                                  report=self.staging / f"promotion-{sha[:12]}-{int(time.time())}",
                                  threads=self.settings.threads)
            code = run_promote(opts)
        finally:
            staged.unlink(missing_ok=True)
            _prune_reports(self.staging, self.settings.keep)
        gate = _gate_words(_decision(opts.report or self.staging), code)
        if code != 0:
            state: wire.State = "refused" if code == 1 else "failed"
            return _Outcome(state, gate, {"exit_code": code})
        if url is None or before is None:
            return _Outcome("done", gate)
        after = window(url, window_s)
        verdict = judge_watch(before, after, max_rise)
        numbers = {"escalation_before": verdict.before, "escalation_after": verdict.after}
        if verdict.ok:
            return _Outcome("done", f"{gate}; watch: {verdict.detail}", numbers)
        back = run_rollback(RollbackOptions(self.settings.config, self.settings.target, self.settings.keep))
        rolled = "rolled back" if back == 0 else f"the rollback failed (exit {back}; see the box's log)"
        return _Outcome("refused" if back == 0 else "failed", f"{gate}; watch: {verdict.detail}; {rolled}", numbers)

    def _metrics_url(self) -> str:
        from agent.config.loader import load_config
        from agent.tooling.reload import find_agent

        agent = find_agent(self.settings.target, load_config(self.settings.config))
        if agent is None or agent.health_url is None:
            why = "--no-reload" if agent is None else agent.no_health
            raise EdgeAgentError(f"the escalation watch needs the running agent's /metrics, and there is none "
                                 f"({why}); nothing changed")
        return metrics_url(agent.health_url)

    # -- rollback ----------------------------------------------------------------------------------------------

    def _rollback(self, cmd: dict[str, Any]) -> _Outcome:
        now = self.running()
        if now is None or now["sha256"] != cmd.get("sha256"):
            runs = "no model" if now is None else now["id"]
            return _Outcome("unchanged", f"runs {runs}, not the rollout's model: nothing to roll back")
        code = run_rollback(RollbackOptions(self.settings.config, self.settings.target, self.settings.keep))
        if code != 0:
            return _Outcome("failed", f"the rollback did not complete (exit {code}; see the box's log)",
                            {"exit_code": code})
        return _Outcome("done", f"rolled back from {now['id']}")


def serve(server: BoxServer, bus: Any, prefix: str, stop: threading.Event) -> None:
    """Take commands from ``bus`` (a :class:`~agent.tooling.fleet.bus.FleetBus`, subscribed) until ``stop``."""
    topic = wire.reply_topic(prefix, server.device)

    def send(doc: dict[str, Any]) -> None:
        try:
            bus.publish(topic, json.dumps(doc, separators=(",", ":")).encode())
        except EdgeAgentError as exc:
            log.warning("fleet reply %s not sent: %s", doc.get("state"), exc)

    while not stop.is_set():
        try:
            msg = bus.inbox.get(timeout=0.2)
        except queue.Empty:
            continue
        server.handle(msg.payload, send, msg.received)

