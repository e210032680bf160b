"""The images' folder on disk: one JPEG per kept frame and a small SQLite index, bounded per camera.

Layout::

    DIR/index.sqlite                                   the index (WAL): one row per image, totals per camera
    DIR/<camera>/<YYYY-MM-DD>/<HHMMSS.ffffff>_<event_id>.jpg   the JPEG (UTC capture time)

A write goes to ``<name>.tmp``, is renamed into place, then its row is inserted: the row commits the image.
A crash leaves at most a ``.tmp`` or a JPEG without a row, which :meth:`ImageStore.open` deletes. Triggers keep
``totals`` (images and bytes per camera) in step with every insert and delete, so the agent and the CLI
(``edge-agent images purge``, which may run beside the agent) see the same numbers.

Bounds, per camera: before an image is added, the camera's oldest images (by capture time) are deleted until
the new one fits ``max_bytes``, so a camera's bytes never exceed it; :meth:`ImageStore.evict_older` deletes the
images captured before a cut-off (the age limit). The file system calls go through :class:`Disk`, the seam a
test uses to make the disk full.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import pathlib
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from agent.errors import ImagesError

__all__ = ["INDEX", "Disk", "ImageRow", "ImageStore", "Query", "image_path"]

log = logging.getLogger(__name__)

INDEX = "index.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    event_id TEXT PRIMARY KEY, camera TEXT NOT NULL, captured REAL NOT NULL, verdict TEXT NOT NULL,
    path TEXT NOT NULL, bytes INTEGER NOT NULL, revision INTEGER NOT NULL DEFAULT 1, payload TEXT);
CREATE INDEX IF NOT EXISTS images_camera_captured ON images (camera, captured);
CREATE INDEX IF NOT EXISTS images_captured ON images (captured);
CREATE TABLE IF NOT EXISTS totals (camera TEXT PRIMARY KEY, images INTEGER NOT NULL, bytes INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS images_added AFTER INSERT ON images BEGIN
    INSERT INTO totals (camera, images, bytes) VALUES (NEW.camera, 1, NEW.bytes)
    ON CONFLICT (camera) DO UPDATE SET images = images + 1, bytes = bytes + NEW.bytes;
END;
CREATE TRIGGER IF NOT EXISTS images_deleted AFTER DELETE ON images BEGIN
    UPDATE totals SET images = images - 1, bytes = bytes - OLD.bytes WHERE camera = OLD.camera;
END;
"""


def image_path(camera: str, event_id: str, captured: datetime.datetime) -> str:
    """Where an image goes, relative to the folder (also what the tag event's ``image.path`` says)."""
    t = captured.astimezone(datetime.timezone.utc)
    return f"{camera}/{t:%Y-%m-%d}/{t:%H%M%S.%f}_{event_id}.jpg"


class Disk:
    """The file system calls of the store (a test replaces them to make the disk full)."""

    def write(self, path: pathlib.Path, data: bytes) -> None:
        """``data`` into ``path`` atomically (a ``.tmp`` renamed into place); OSError as the OS raises it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def free_bytes(self, path: pathlib.Path) -> int:
        return shutil.disk_usage(path).free

    def remove(self, path: pathlib.Path) -> None:
        path.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class ImageRow:
    """One kept image as the index knows it."""

    event_id: str
    camera: str
    captured: float  # Unix time (UTC)
    verdict: str
    path: str  # relative to the folder
    bytes: int
    revision: int
    payload: dict[str, Any] | None  # the tag event as published (the latest revision); None if not yet known

    @property
    def captured_at(self) -> str:
        return datetime.datetime.fromtimestamp(self.captured, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True)
class Query:
    """Which images: every field that is set must match (``since`` inclusive, ``until`` exclusive)."""

    since: float | None = None
    until: float | None = None
    cameras: tuple[str, ...] = ()
    verdicts: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if self.since is not None:
            clauses.append("captured >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("captured < ?")
            args.append(self.until)
        for column, values in (("camera", self.cameras), ("verdict", self.verdicts), ("event_id", self.event_ids)):
            if values:
                clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                args.extend(values)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


_DELETE_CHUNK = 500  # rows deleted in one transaction
_COLUMNS = "event_id, camera, captured, verdict, path, bytes, revision, payload"


def _row(r: Sequence[Any]) -> ImageRow:
    return ImageRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]) if r[7] else None)


class ImageStore:
    """The folder and its index. Thread-safe (one connection behind a lock)."""

    def __init__(self, root: pathlib.Path, db: sqlite3.Connection, disk: Disk) -> None:
        self.root = root
        self.disk = disk
        self._db = db
        self._lock = threading.Lock()

    @classmethod
    def open(cls, root: pathlib.Path, *, disk: Disk | None = None, create: bool = True,
             repair: bool = True) -> ImageStore:
        """Open (``create``: and make) the folder; ``repair`` deletes what an interrupted write left.
        ImagesError when it cannot be made or read."""
        index = root / INDEX
        if not create and not index.is_file():
            raise ImagesError(f"{root}: no images folder here (no {INDEX}); expected the folder of images.dir "
                              "where the agent keeps its images")
        try:
            root.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(index, check_same_thread=False, timeout=10.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ImagesError(f"images folder {root}: cannot open its index {index} ({exc})") from exc
        store = cls(root, db, disk or Disk())
        if repair:
            store.repair()
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def repair(self) -> int:
        """Delete ``.tmp`` files and JPEGs without a row (left by a crash); how many."""
        with self._lock:
            known = {r[0] for r in self._db.execute("SELECT path FROM images")}
        removed = 0
        for path in self.root.glob("*/*/*"):
            rel = path.relative_to(self.root).as_posix()
            if path.name.endswith(".tmp") or (path.suffix == ".jpg" and rel not in known):
                self.disk.remove(path)
                removed += 1
        if removed:
            log.info("images: deleted %d file(s) an interrupted write left in %s", removed, self.root)
        return removed

    # -- the writer's side ------------------------------------------------------------------------------------

    def add(self, row: ImageRow, jpeg: bytes, max_bytes: int) -> int:
        """Write ``jpeg`` and index it, after deleting the camera's oldest images until it fits ``max_bytes``
        (how many were deleted). OSError (e.g. ENOSPC) or sqlite3.Error when the disk refuses."""
        evicted = self._make_room(row.camera, len(jpeg), max_bytes)
        target = self.root / row.path
        self.disk.write(target, jpeg)
        try:
            with self._lock:
                self._db.execute(f"INSERT OR REPLACE INTO images ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                                 (row.event_id, row.camera, row.captured, row.verdict, row.path, len(jpeg),
                                  row.revision, None if row.payload is None else json.dumps(row.payload)))
        except sqlite3.Error:
            self.disk.remove(target)
            raise
        return evicted

    def _make_room(self, camera: str, size: int, max_bytes: int) -> int:
        evicted = 0
        while True:
            used = self.totals().get(camera, (0, 0))[1]
            if used + size <= max_bytes:
                return evicted
            with self._lock:
                oldest = self._db.execute(f"SELECT {_COLUMNS} FROM images WHERE camera = ? ORDER BY captured "
                                          "LIMIT 32", (camera,)).fetchall()
            if not oldest:
                return evicted  # an image larger than the bound alone: kept, the bound is exceeded by it only
            going = []
            for r in oldest:
                going.append(_row(r))
                used -= r[5]
                if used + size <= max_bytes:
                    break
            self._delete(going)
            evicted += len(going)
            if used + size <= max_bytes:
                return evicted

    def update(self, event_id: str, verdict: str, revision: int, payload: dict[str, Any]) -> bool:
        """The published event of an image (a later revision replaces an earlier one); False if no such image."""
        with self._lock:
            cur = self._db.execute("UPDATE images SET verdict = ?, revision = ?, payload = ? WHERE event_id = ? "
                                   "AND revision <= ?", (verdict, revision, json.dumps(payload), event_id, revision))
        return cur.rowcount > 0

    def evict_older(self, cut_off: float, camera: str | None = None) -> int:
        """Delete the images captured before ``cut_off`` (Unix time), of ``camera`` or all; how many."""
        return self.delete(Query(until=cut_off, cameras=(camera,) if camera else ()))

    # -- queries (the CLI's and the agent's) --------------------------------------------------------------------

    def rows(self, query: Query) -> Iterator[ImageRow]:
        """The images ``query`` picks, oldest first."""
        where, args = query.where()
        with self._lock:
            found = self._db.execute(f"SELECT {_COLUMNS} FROM images{where} ORDER BY captured", args).fetchall()
        return (_row(r) for r in found)

    def totals(self) -> dict[str, tuple[int, int]]:
        """camera -> (images, bytes)."""
        with self._lock:
            return {c: (n, b) for c, n, b in self._db.execute("SELECT camera, images, bytes FROM totals")
                    if n > 0}

    def cameras(self) -> list[str]:
        return sorted(self.totals())

    def delete(self, query: Query) -> int:
        """Delete the images ``query`` picks (rows first, then the files); how many."""
        rows = list(self.rows(query))
        for start in range(0, len(rows), _DELETE_CHUNK):
            self._delete(rows[start:start + _DELETE_CHUNK])
        return len(rows)

    def _delete(self, rows: Sequence[ImageRow]) -> None:
        """The rows in one transaction, then their files."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("DELETE FROM images WHERE event_id = ?", [(r.event_id,) for r in rows])
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        for row in rows:
            try:
                self.disk.remove(self.root / row.path)
            except OSError as exc:  # the row is gone: the file is an orphan the next repair deletes
                log.warning("images: cannot delete %s (%s); deleted at the next start", row.path, exc.strerror)
