"""The SQLite outbox: every event is committed here before MQTT sees it.

A row is deleted only when the broker acknowledged it (PUBACK), so a broker outage
or a crash of the agent loses nothing that was committed. Rows are replayed oldest
first. The store is bounded in rows and bytes; when full, the *oldest* rows are
evicted, counted and logged (never silently).

Redelivery bookkeeping: ``sent_high_water`` (kept in the database) is the highest
row id ever handed to MQTT. After a restart, rows at or below it may already have
reached the broker; sending them again is an at-least-once redelivery, and is
counted as such (consumers dedupe on ``event_id``).

Durability: WAL journal. ``synchronous=NORMAL`` (default) survives a crash or
SIGKILL of the agent; ``FULL`` also survives a power cut, at the price of an fsync
per commit (see ``scripts/bench_publish.py``).

Dead letters. A message that can never be delivered (larger than the broker's
Maximum Packet Size, or refused by the broker again and again) is moved to the
``dead_letters`` table of the same file by :meth:`Outbox.dead_letter`: kept with
its cause, counted, and out of the way of the messages behind it.
``edge-agent outbox`` lists, exports, requeues and purges them
(:mod:`agent.publish.deadletters`); a change made by another process is noticed
through SQLite's ``data_version`` and the counters are read again.

A file that is not a readable SQLite outbox is moved aside (``*.corrupt-<time>``)
with an error in the log, and a new outbox is started: the agent keeps running.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import pathlib
import sqlite3
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Literal

from agent.errors import OutboxError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: the dead_letters table (created in a version 1 file when it is opened)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    dead_at REAL NOT NULL,
    cause TEXT NOT NULL,
    detail TEXT NOT NULL,
    tries INTEGER NOT NULL
);
"""


class _Corrupt(Exception):
    """The file is not a usable outbox (not SQLite, damaged, or another schema)."""


@dataclasses.dataclass(frozen=True)
class OutboxRow:
    id: int
    event_id: str
    camera: str
    topic: str
    payload: bytes


@dataclasses.dataclass(frozen=True)
class OutboxStats:
    rows: int
    bytes: int
    appended: int  # since this process opened the outbox
    deleted: int  # acknowledged and removed
    evicted: int  # removed unsent because the outbox was full (lost on purpose, counted)
    evicted_total: int  # over the outbox file's whole life
    recovered: int  # rows found at open (left over from before a restart or outage)
    corrupt_moved_to: str | None  # where a corrupt file was moved at open, if one was
    dead_letters: int = 0  # rows in the dead-letter table now
    dead_lettered: int = 0  # moved there by this process
    dead_by_cause: tuple[tuple[str, int], ...] = ()  # (cause, rows now), sorted by cause


class Outbox:
    def __init__(
        self,
        path: pathlib.Path,
        *,
        max_rows: int = 100_000,
        max_bytes: int = 256 * 1024 * 1024,
        synchronous: Literal["normal", "full"] = "normal",
    ) -> None:
        if max_rows < 1 or max_bytes < 1:
            raise OutboxError(f"outbox bounds must be positive, got max_rows={max_rows} max_bytes={max_bytes}")
        self.path = pathlib.Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._synchronous = synchronous.upper()
        self._lock = threading.Lock()
        self._appended = self._deleted = self._evicted = 0
        self._last_evict_log = 0.0
        self._evicted_unlogged = 0
        self.corrupt_moved_to: str | None = None
        self._db = self._open()
        rows, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM events").fetchone()
        self._rows, self._bytes = int(rows), int(size)
        self.recovered = self._rows
        self._dead_lettered = 0
        self._dead_by_cause = self._count_dead()
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        self._evicted_total = self._meta("evicted_total")
        self.sent_high_water = self._meta("sent_high_water")
        if self._rows:
            log.info("outbox %s: %d event(s) left from before, to be sent first", self.path, self._rows)

    # -- opening ------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        directory = self.path.parent
        hint = "set outbox.path to a writable place (under systemd: StateDirectory=edge-agent)"
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"outbox directory {directory} cannot be created ({exc.strerror}); {hint}") from exc
        try:  # a real write, not os.access: root, read-only mounts and immutable folders differ
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            raise OutboxError(f"outbox directory {directory} is not writable by this user (uid {os.getuid()}: "
                              f"{exc.strerror}); {hint}") from exc
        if self.path.exists():
            try:
                with self.path.open("r+b"):
                    pass
            except OSError as exc:
                raise OutboxError(f"outbox file {self.path} cannot be opened for writing ({exc.strerror}); "
                                  f"{hint}") from exc
        try:
            return self._connect()
        except _Corrupt as exc:
            moved = self._move_aside(str(exc))
            try:
                return self._connect()
            except (sqlite3.Error, _Corrupt) as exc2:
                raise OutboxError(f"outbox {self.path}: cannot start a new outbox after moving the corrupt one "
                                  f"to {moved}: {exc2}") from exc2
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path} cannot be opened: {exc}; {hint}") from exc

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
        try:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                check = db.execute("PRAGMA quick_check").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                if "not a database" in str(exc) or "malformed" in str(exc):
                    raise _Corrupt(str(exc)) from exc
                raise
            if check != "ok":
                raise _Corrupt(f"integrity check failed: {check}")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.executescript(_SCHEMA)
            columns = [r[1] for r in db.execute("PRAGMA table_info(events)")]
            expected = ["id", "event_id", "camera", "topic", "payload", "created"]
            if columns != expected:
                raise _Corrupt(f"table 'events' has columns {columns}, expected {expected}")
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, reason: str) -> str:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = pathlib.Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, pathlib.Path(str(target) + suffix))
        self.corrupt_moved_to = str(target)
        log.error("outbox %s is not a usable outbox (%s); moved it to %s and started a new one. Events in the "
                  "old file were not sent; inspect it with sqlite3.", self.path, reason, target)
        return str(target)

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    # -- the hot path -------------------------------------------------------------------------

    def append(self, event_id: str, camera: str, topic: str, payload: bytes) -> int:
        """Commit one event; evict the oldest rows first if the bounds require it. Returns the row id."""
        return self.append_many([(event_id, camera, topic, payload)])[0]

    def append_many(self, items: Sequence[tuple[str, str, str, bytes]]) -> list[int]:
        """Commit several events (``(event_id, camera, topic, payload)`` each) in one transaction, in order: all
        of them or, on an error, none. The oldest rows are evicted first where the bounds require it, as for
        :meth:`append`. Returns their row ids."""
        for event_id, _camera, _topic, payload in items:
            if len(payload) > self.max_bytes:
                raise OutboxError(f"event {event_id} is {len(payload)} bytes, larger than "
                                  f"outbox.max_bytes={self.max_bytes}")
        if not items:
            return []
        with self._lock:
            evicted, ids, before = 0, [], (self._rows, self._bytes)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                created = time.time()
                for event_id, camera, topic, payload in items:
                    evicted += self._make_room_locked(len(payload))
                    cur = self._db.execute(
                        "INSERT INTO events(event_id, camera, topic, payload, created) VALUES (?, ?, ?, ?, ?)",
                        (event_id, camera, topic, payload, created))
                    ids.append(int(cur.lastrowid or 0))
                    self._rows += 1
                    self._bytes += len(payload)
                if evicted:
                    self._db.execute("INSERT INTO meta(key, value) VALUES ('evicted_total', ?) "
                                     "ON CONFLICT(key) DO UPDATE SET value = value + ?", (evicted, evicted))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._rows, self._bytes = before
                what = f"event {items[0][0]}" + (f" and {len(items) - 1} more" if len(items) > 1 else "")
                raise OutboxError(f"outbox {self.path}: cannot store {what}: {exc}") from exc
            self._appended += len(items)
            if evicted:
                self._evicted += evicted
                self._evicted_total += evicted
                self._evicted_unlogged += evicted
        if evicted:
            self._log_eviction()
        return ids

    def _make_room_locked(self, size: int) -> int:
        """Evict the oldest rows until one more row of ``size`` bytes fits the bounds; returns rows evicted."""
        evicted = 0
        while self._rows and (self._rows + 1 > self.max_rows or self._bytes + size > self.max_bytes):
            evicted += self._evict_oldest_locked(max(1, self._rows + 1 - self.max_rows))
        return evicted

    def _evict_oldest_locked(self, count: int) -> int:
        rows = self._db.execute("SELECT id, LENGTH(payload) FROM events ORDER BY id LIMIT ?", (count,)).fetchall()
        if not rows:
            return 0
        self._db.execute("DELETE FROM events WHERE id <= ?", (rows[-1][0],))
        self._rows -= len(rows)
        self._bytes -= sum(int(r[1]) for r in rows)
        return len(rows)

    def _log_eviction(self) -> None:
        now = time.monotonic()
        if now - self._last_evict_log < 10.0:
            return
        with self._lock:
            n, self._evicted_unlogged = self._evicted_unlogged, 0
            total = self._evicted_total
        self._last_evict_log = now
        log.warning("outbox full (max_rows=%d, max_bytes=%d): evicted the %d oldest unsent event(s) "
                    "(%d in total)", self.max_rows, self.max_bytes, n, total)

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            log.debug("rollback after a failed outbox write failed too", exc_info=True)

    # -- the forwarder's side -----------------------------------------------------------------

    def next_rows(self, after_id: int, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` rows with id > ``after_id``, oldest first."""
        with self._lock:
            self._resync_locked()
            cur = self._db.execute(
                "SELECT id, event_id, camera, topic, payload FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit))
            return [OutboxRow(int(r[0]), r[1], r[2], r[3], bytes(r[4])) for r in cur.fetchall()]

    def rows_by_id(self, ids: list[int]) -> list[OutboxRow]:
        """The rows among ``ids`` still in the outbox (not acknowledged, evicted or dead-lettered), by id."""
        out: list[OutboxRow] = []
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                cur = self._db.execute("SELECT id, event_id, camera, topic, payload FROM events "
                                       f"WHERE id IN ({','.join('?' * len(chunk))}) ORDER BY id", chunk)
                out += [OutboxRow(int(r[0]), r[1], r[2], r[3], bytes(r[4])) for r in cur.fetchall()]
        return sorted(out, key=lambda r: r.id)

    def dead_letter(self, ids: list[int], cause: str, detail: str, tries: int) -> int:
        """Move rows to the dead-letter table with their ``cause`` (a short key such as ``too_large`` or
        ``refused 0x87``) and ``detail`` (in words, with the limit and size or the reason). Returns rows moved."""
        copy = ("INSERT OR REPLACE INTO dead_letters(id, event_id, camera, topic, payload, created, dead_at, cause, "
                "detail, tries) SELECT id, event_id, camera, topic, payload, created, ?, ?, ?, ? FROM events "
                "WHERE id IN ({marks})", (time.time(), cause, detail, tries))
        with self._lock:
            moved = self._take_out(ids, copy, "move events to the dead letters")
            self._dead_lettered += moved
            if moved:
                self._dead_by_cause[cause] = self._dead_by_cause.get(cause, 0) + moved
            return moved

    def discard(self, ids: list[int]) -> int:
        """Remove rows that will never be sent and are not kept (a snapshot too large for the broker,
        counted by the caller). Returns rows removed."""
        return self._remove(ids, acknowledged=False)

    def _count_rows(self, marks: str, chunk: list[int]) -> tuple[int, int]:
        """Rows of ``chunk`` still in the events table, and their payload bytes (under the lock)."""
        found = self._db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM events WHERE id IN ({marks})", chunk).fetchone()
        return int(found[0]), int(found[1])

    def _count_dead(self) -> dict[str, int]:
        return {str(c): int(n) for c, n in self._db.execute("SELECT cause, COUNT(*) FROM dead_letters GROUP BY cause")}

    def _resync_locked(self) -> None:
        """Another process (``edge-agent outbox requeue``/``purge``) changed the file: read the counters again."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return
        self._data_version = version
        rows, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM events").fetchone()
        self._rows, self._bytes = int(rows), int(size)
        self._dead_by_cause = self._count_dead()

    def mark_sent(self, up_to_id: int) -> None:
        """Record that rows up to ``up_to_id`` were handed to MQTT (for redelivery counting)."""
        if up_to_id <= self.sent_high_water:
            return
        with self._lock:
            self._db.execute("INSERT INTO meta(key, value) VALUES ('sent_high_water', ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)", (up_to_id,))
            self.sent_high_water = up_to_id

    def delete(self, ids: list[int]) -> int:
        """Remove acknowledged rows. Ids that were evicted meanwhile are ignored. Returns rows removed."""
        return self._remove(ids, acknowledged=True)

    def _remove(self, ids: list[int], *, acknowledged: bool) -> int:
        with self._lock:
            removed = self._take_out(ids, None, "delete events")
            if acknowledged:
                self._deleted += removed
            return removed

    def _take_out(self, ids: list[int], copy: tuple[str, tuple[object, ...]] | None, doing: str) -> int:
        """Delete rows ``ids`` from the events table in one transaction (in chunks of 500 ids), first copying
        them with ``copy`` (SQL with ``{marks}`` for the ids, and its leading parameters) when given; keeps
        the row and byte counts. Ids already gone are ignored. Returns rows taken out. Caller holds the lock."""
        if not ids:
            return 0
        taken = size = 0
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows, nbytes = self._count_rows(marks, chunk)
                if copy is not None:
                    self._db.execute(copy[0].format(marks=marks), (*copy[1], *chunk))
                self._db.execute(f"DELETE FROM events WHERE id IN ({marks})", chunk)
                taken += rows
                size += nbytes
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise OutboxError(f"outbox {self.path}: cannot {doing}: {exc}") from exc
        self._rows -= taken
        self._bytes -= size
        return taken

    def stats(self) -> OutboxStats:
        with self._lock:
            return OutboxStats(self._rows, self._bytes, self._appended, self._deleted, self._evicted,
                               self._evicted_total, self.recovered, self.corrupt_moved_to,
                               dead_letters=sum(self._dead_by_cause.values()), dead_lettered=self._dead_lettered,
                               dead_by_cause=tuple(sorted((c, n) for c, n in self._dead_by_cause.items() if n)))

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                log.debug("WAL checkpoint at close failed", exc_info=True)
            self._db.close()
