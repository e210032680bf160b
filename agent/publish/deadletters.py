"""Look after an outbox file from outside the agent: what is pending and dead-lettered, export, requeue, purge.

``edge-agent outbox`` uses these; they work on the SQLite file whether or not the agent runs (SQLite
locks; the running agent notices the change through ``data_version``). A requeued dead letter goes
back to the end of the queue with a new row id: it is sent after the messages committed before the
requeue, so a consumer sees it late (its ``event_id`` and capture time are unchanged).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from agent.errors import OutboxError
from agent.publish.outbox import Outbox


@dataclasses.dataclass(frozen=True)
class CauseSummary:
    cause: str
    count: int
    oldest: float  # created (commit time) of the oldest, epoch seconds
    newest_dead: float  # when the latest was dead-lettered
    total_bytes: int
    largest: int
    detail: str  # the latest one's detail


@dataclasses.dataclass(frozen=True)
class OutboxSummary:
    pending: int
    pending_bytes: int
    pending_oldest: float | None
    pending_largest: int
    dead: list[CauseSummary]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summary(outbox: Outbox) -> OutboxSummary:
    db = _db(outbox)
    n, size, oldest, largest = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MIN(created), COALESCE(MAX(LENGTH(payload)), 0) "
        "FROM events").fetchone()
    causes = [CauseSummary(str(r[0]), int(r[1]), float(r[2]), float(r[3]), int(r[4]), int(r[5]), str(r[6]))
              for r in db.execute(
                  "SELECT cause, COUNT(*), MIN(created), MAX(dead_at), SUM(LENGTH(payload)), MAX(LENGTH(payload)), "
                  "(SELECT detail FROM dead_letters d2 WHERE d2.cause = d.cause ORDER BY dead_at DESC LIMIT 1) "
                  "FROM dead_letters d GROUP BY cause ORDER BY cause")]
    return OutboxSummary(int(n), int(size), None if oldest is None else float(oldest), int(largest), causes)


def export(outbox: Outbox, cause: str | None = None) -> Iterator[dict[str, Any]]:
    """Dead letters oldest first, as JSON-ready dicts: a JSON payload as ``payload`` (parsed), any other
    (a JPEG) as ``payload_base64``."""
    where, args = _where(cause)
    cur = _db(outbox).execute("SELECT id, event_id, camera, topic, payload, created, dead_at, cause, detail, tries "
                              f"FROM dead_letters{where} ORDER BY id", args)
    for r in cur:
        doc: dict[str, Any] = {"id": r[0], "event_id": r[1], "camera": r[2], "topic": r[3],
                               "created": _iso(r[5]), "dead_at": _iso(r[6]), "cause": r[7], "detail": r[8],
                               "tries": r[9], "bytes": len(r[4])}
        try:
            doc["payload"] = json.loads(bytes(r[4]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc["payload_base64"] = base64.b64encode(bytes(r[4])).decode("ascii")
        yield doc


def count(outbox: Outbox, cause: str | None = None) -> int:
    where, args = _where(cause)
    return int(_db(outbox).execute(f"SELECT COUNT(*) FROM dead_letters{where}", args).fetchone()[0])


def requeue(outbox: Outbox, cause: str | None = None) -> int:
    """Move dead letters (of ``cause``, or all) back to the end of the queue, oldest first. Returns how many."""
    where, args = _where(cause)
    return _transaction(outbox, [
        ("INSERT INTO events(event_id, camera, topic, payload, created) SELECT event_id, camera, topic, payload, "
         f"created FROM dead_letters{where} ORDER BY id", args),
        (f"DELETE FROM dead_letters{where}", args)])


def purge(outbox: Outbox, cause: str | None = None) -> int:
    """Delete dead letters (of ``cause``, or all) for good. Returns how many."""
    where, args = _where(cause)
    return _transaction(outbox, [(f"DELETE FROM dead_letters{where}", args)])


def _transaction(outbox: Outbox, statements: list[tuple[str, tuple[str, ...]]]) -> int:
    db = _db(outbox)
    try:
        db.execute("BEGIN IMMEDIATE")
        changed = 0
        for sql, args in statements:
            changed = db.execute(sql, args).rowcount
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        db.execute("ROLLBACK")
        raise OutboxError(f"outbox {outbox.path}: {exc}") from exc
    return changed


def _where(cause: str | None) -> tuple[str, tuple[str, ...]]:
    return ("", ()) if cause is None else (" WHERE cause = ?", (cause,))


def _db(outbox: Outbox) -> sqlite3.Connection:
    return outbox._db  # noqa: SLF001  the same module family; the Outbox opened and checked the file


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
