"""``edge-agent fleet rollout MANIFEST`` and ``edge-agent fleet rollback MANIFEST``: the operator's end.

Rollout, in order, each step stopping the rollout when it fails:

1. the manifest is read (every problem with its line) and, where the model source is a path the operator can
   read, the file's sha256 is checked against the manifest's (a mismatch stops here: no box is asked);
2. every box is pinged; one that does not answer within ``timeouts.reach_s`` (its ``fleet serve`` is down, or it
   is off the broker) stops the rollout before any box is changed, naming it;
3. the canary promotes (its gate on its held-out set, then its escalation watch); refused or failed: stop,
   the other boxes untouched;
4. the rest promote at the same time (each through its own gate; no watch window): the table says which did,
   which refused, which failed and which did not answer (the operator may roll back).

Exit codes: 0 every box runs the model; 1 the canary refused it (nothing else changed); 2 bad input or a box
out of reach at the start (nothing changed); 3 a partial rollout (the table names every box's state).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from agent.errors import EdgeAgentError
from agent.tooling.fleet import wire
from agent.tooling.fleet.bus import FleetBus
from agent.tooling.fleet.manifest import Manifest
from agent.tooling.fleet.signing import SignatureError, sign, verify

__all__ = ["EXIT_PARTIAL", "EXIT_REFUSED", "BoxResult", "Fleet", "check_source", "run_rollback", "run_rollout"]

EXIT_REFUSED = 1
EXIT_PARTIAL = 3

Echo = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class BoxResult:
    device: str
    state: str  # a final state of wire, or "no reply" / "no start"
    detail: str
    model: str | None  # the model id the box said it runs

    def line(self) -> str:
        return f"  {self.device:<20} {self.state:<10} {self.model or '-':<32} {self.detail}"


class Fleet:
    """Signed commands out, signed replies in, over one :class:`FleetBus` session."""

    def __init__(self, manifest: Manifest, key: bytes, bus: FleetBus, echo: Echo) -> None:
        self.manifest = manifest
        self.key = key
        self.bus = bus
        self.echo = echo
        self.prefix = manifest.broker.topic_prefix

    def send(self, device: str, action: wire.Action, **params: Any) -> str:
        cmd = sign(wire.command(device, action, **params), self.key)
        self.bus.publish(wire.command_topic(self.prefix, device), json.dumps(cmd, separators=(",", ":")).encode())
        return str(cmd["id"])

    def collect(self, sent: dict[str, str], start_s: float, finish_s: float) -> dict[str, BoxResult]:
        """The final reply of each command ``sent`` (id -> device). A box that has not said ``started`` within
        ``start_s`` or finished within ``finish_s`` is reported as such."""
        t0 = time.monotonic()
        started: set[str] = set()
        results: dict[str, BoxResult] = {}
        while len(results) < len(sent):
            now = time.monotonic() - t0
            waiting = [i for i in sent if i not in results]
            if now > finish_s or (now > start_s and not any(i in started for i in waiting)):
                break
            doc = self._next(min(0.2, max(0.01, finish_s - now)))
            if doc is None or doc.get("id") not in sent or doc.get("id") in results:
                continue
            cmd_id, state = str(doc["id"]), str(doc.get("state"))
            if state == "started":
                started.add(cmd_id)
            elif state in wire.FINAL_STATES:
                model = doc.get("model")
                results[cmd_id] = BoxResult(sent[cmd_id], state, str(doc.get("detail", "")),
                                            model.get("id") if isinstance(model, dict) else None)
        for cmd_id, device in sent.items():
            if cmd_id not in results:
                late = cmd_id in started
                results[cmd_id] = BoxResult(device, "no reply" if late else "no start",
                                            f"started but no result within {finish_s:g} s" if late else
                                            f"no answer within {start_s:g} s (is `edge-agent fleet serve` running "
                                            "there, connected to the broker, with the same fleet key?)", None)
        return {device: results[cmd_id] for cmd_id, device in sent.items()}  # in the manifest's order

    def _next(self, timeout: float) -> dict[str, Any] | None:
        import queue

        try:
            msg = self.bus.inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        try:
            return verify(wire.parse(msg.payload, f"reply on {msg.topic}"), self.key)
        except (SignatureError, EdgeAgentError) as exc:
            self.echo(f"warning: ignored a message on {msg.topic}: {exc}")
            return None

    def ping(self, devices: list[str]) -> dict[str, BoxResult]:
        reach = self.manifest.timeouts.reach_s
        return self.collect({self.send(d, "ping"): d for d in devices}, reach, reach)


def check_source(manifest: Manifest) -> str:
    """A note on the model source; EdgeAgentError when it is a readable file whose sha256 is not the manifest's."""
    from agent.prefilter.model_info import file_digest

    source = manifest.model.source
    if urllib.parse.urlsplit(source).scheme in ("http", "https"):
        return f"model source {source}: an URL, each box checks the digest"
    path = pathlib.Path(source)
    if not path.is_file():
        return f"model source {path}: not readable here; each box reads it and checks the digest"
    got = file_digest(path)
    if got != manifest.model.sha256:
        raise EdgeAgentError(f"model.source {path} has sha256 {got}, the manifest names {manifest.model.sha256}: "
                             "the boxes would refuse it; nothing was changed (update model.sha256, or the file)")
    return f"model source {path}: sha256 {got[:12]} as the manifest says"


def _reachable(fleet: Fleet, devices: list[str]) -> None:
    results = fleet.ping(devices)
    missing = [r for r in results.values() if r.state != "done"]
    for r in results.values():
        fleet.echo(r.line())
    if missing:
        raise EdgeAgentError("out of reach: " + "; ".join(f"{r.device} ({r.state}: {r.detail})" for r in missing)
                             + ". Nothing was changed on any box")


def _promote_params(manifest: Manifest, watch: bool) -> dict[str, Any]:
    return {"source": manifest.model.source, "sha256": manifest.model.sha256,
            "gate": manifest.gate.model_dump(), "watch": manifest.watch.model_dump() if watch else {"window_s": 0}}


def run_rollout(manifest: Manifest, fleet: Fleet) -> int:
    echo, m = fleet.echo, manifest
    echo(check_source(m))
    echo(f"reaching {len(m.boxes)} boxes:")
    _reachable(fleet, m.boxes)
    canary = m.canary_box
    echo(f"canary {canary}: promote, gate margin {m.gate.margin:g}, watch {m.watch.window_s:g} s "
         f"(max rise {m.watch.max_rise:g})")
    first = fleet.collect({fleet.send(canary, "promote", **_promote_params(m, True)): canary},
                          m.timeouts.reach_s, m.timeouts.canary_s)[canary]
    echo(first.line())
    if first.state != "done":
        untouched = ", ".join(m.rest) or "none"
        echo(f"STOPPED at the canary {canary} ({first.state}); not asked: {untouched}")
        return EXIT_REFUSED if first.state == "refused" else EXIT_PARTIAL
    if not m.rest:
        return _table(echo, {canary: first}, "rollout")
    echo(f"the rest ({len(m.rest)}): promote")
    params = _promote_params(m, False)
    results = fleet.collect({fleet.send(d, "promote", **params): d for d in m.rest}, m.timeouts.reach_s,
                            m.timeouts.box_s)
    return _table(echo, {canary: first, **results}, "rollout")


def run_rollback(manifest: Manifest, fleet: Fleet) -> int:
    """Every box that runs the manifest's model goes back to the one it ran before; the others are left."""
    echo = fleet.echo
    sent = {fleet.send(d, "rollback", sha256=manifest.model.sha256): d for d in manifest.boxes}
    results = fleet.collect(sent, manifest.timeouts.reach_s, manifest.timeouts.box_s)
    return _table(echo, results, "rollback")


def _table(echo: Echo, results: dict[str, BoxResult], what: str) -> int:
    for r in results.values():
        echo(r.line())
    bad = [r for r in results.values() if r.state not in ("done", "unchanged")]
    done = [r.device for r in results.values() if r.state == "done"]
    if bad:
        echo(f"{what} INCOMPLETE: done on {', '.join(done) or 'none'}; not on "
             + ", ".join(f"{r.device} ({r.state})" for r in bad)
             + (" (`edge-agent fleet rollback MANIFEST` puts the done ones back)" if what == "rollout" else ""))
        return EXIT_PARTIAL
    echo(f"{what} complete: {len(done)} box(es) changed")
    return 0
