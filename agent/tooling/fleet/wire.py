"""What travels on the fleet topics: commands from the operator, replies from a box. Pure.

Topics (QoS 1, never retained: a command is for the box that is there now, not one that connects in a week):
``<prefix>/<device>/fleet/command`` and ``<prefix>/<device>/fleet/reply``. Every message is signed
(:mod:`.signing`); a command names its box, an id the box has not seen, and when it was issued (a box refuses one
older than :data:`MAX_AGE_S`, so a recorded command cannot be replayed later).

Commands (``action``): ``ping`` (who are you, what do you run), ``promote`` (``source``, ``sha256``, ``gate``,
``watch``), ``rollback`` (``sha256``: the model the rollout installed; a box that runs another is left alone).
Replies (``state``): ``started`` (the box took the command), then one of ``done``, ``refused`` (the gate, a digest
mismatch, the watch: nothing of the box changed, or it was put back) or ``failed`` (the box could not do it; the
``detail`` says what state it is in); ``unchanged`` (rollback: it does not run that model). Each reply carries the
model the box runs afterwards (``model``: id and sha256).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from agent.errors import EdgeAgentError

__all__ = ["ACTIONS", "FINAL_STATES", "MAX_AGE_S", "command", "command_topic", "parse", "reply", "reply_topic"]

ACTIONS = ("ping", "promote", "rollback")
FINAL_STATES = ("done", "refused", "failed", "unchanged")
MAX_AGE_S = 300.0
VERSION = 1

Action = Literal["ping", "promote", "rollback"]
State = Literal["started", "done", "refused", "failed", "unchanged"]


def command_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{device}/fleet/command"


def reply_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{device}/fleet/reply"


def command(device: str, action: Action, **params: Any) -> dict[str, Any]:
    """A new command (unsigned) for ``device``."""
    return {"v": VERSION, "id": uuid.uuid4().hex, "device": device, "action": action, "issued_at": time.time(),
            **params}


def reply(cmd: dict[str, Any], device: str, state: State, detail: str, model: dict[str, Any] | None,
          **extra: Any) -> dict[str, Any]:
    """A box's reply (unsigned) to ``cmd``."""
    return {"v": VERSION, "id": cmd.get("id"), "device": device, "action": cmd.get("action"), "state": state,
            "detail": detail, "model": model, **extra}


def parse(payload: bytes, what: str) -> dict[str, Any]:
    """A fleet message as a dict; EdgeAgentError when it is not a JSON object of this version."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EdgeAgentError(f"{what}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise EdgeAgentError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("v") != VERSION:
        raise EdgeAgentError(f"{what}: version {doc.get('v')!r}; expected {VERSION}")
    return doc
