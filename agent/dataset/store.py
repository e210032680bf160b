"""The recorder's folder on disk: atomic writes, a count and byte bound, oldest-first eviction.

Layout::

    DIR/records/<id>.jpg    the full frame
    DIR/records/<id>.json   the record (:mod:`agent.dataset.record`); its presence commits the pair

Writes are atomic: each file is written to ``<name>.tmp``, flushed to disk, then renamed into place, the
JPEG first and the JSON last, so a crash leaves either a whole record or files that are not one (a ``.tmp``,
a JPEG without its JSON), which :meth:`RecordStore.open` deletes. Eviction deletes the JSON first.

The index (id -> bytes of both files) lives in memory and is rebuilt from the folder at open: the folder
is the truth, so nothing can disagree with it after a crash. Record ids start with the capture time (UTC),
so sorting them sorts by capture time; the **oldest by capture time is evicted first** whenever a bound
(``max_frames``, ``max_bytes``) is passed, at open too (bounds lowered in the config).
"""

from __future__ import annotations

import bisect
import logging
import os
import pathlib
import threading

from agent.errors import DatasetError

__all__ = ["RecordStore"]

log = logging.getLogger(__name__)

RECORDS = "records"


class RecordStore:
    """A bounded folder of records. Thread-safe; ``add`` is called by the recorder's writer thread."""

    def __init__(self, root: pathlib.Path, max_frames: int, max_bytes: int) -> None:
        if max_frames < 1 or max_bytes < 1:
            raise ValueError(f"bounds must be positive, got max_frames={max_frames}, max_bytes={max_bytes}")
        self.root = root
        self.folder = root / RECORDS
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._ids: list[str] = []  # sorted: oldest capture time first
        self._sizes: dict[str, int] = {}
        self._bytes = 0
        self.evicted = 0
        self.repaired = 0  # leftovers of an interrupted write deleted at open

    @classmethod
    def open(cls, root: pathlib.Path, max_frames: int, max_bytes: int) -> RecordStore:
        """Create or reopen ``root``: clean what an interrupted write left, rebuild the index, apply the bounds.
        DatasetError when the folder cannot be made or read."""
        store = cls(root, max_frames, max_bytes)
        try:
            store.folder.mkdir(parents=True, exist_ok=True)
            store._rebuild()
        except OSError as exc:
            raise DatasetError(f"dataset.dir {root}: cannot create or read the record folder "
                               f"({exc.strerror or exc}); the agent needs write access there") from exc
        store._evict()
        return store

    def _rebuild(self) -> None:
        names = {p.name: p for p in self.folder.iterdir()}
        for name, path in names.items():
            stale = name.endswith(".tmp") or (name.endswith(".jpg") and name[:-4] + ".json" not in names) or (
                name.endswith(".json") and name[:-5] + ".jpg" not in names)
            if stale:
                path.unlink(missing_ok=True)
                self.repaired += 1
        for name in sorted(names):
            if name.endswith(".json") and name[:-5] + ".jpg" in names:
                rid = name[:-5]
                try:
                    size = names[name].stat().st_size + names[rid + ".jpg"].stat().st_size
                except FileNotFoundError:
                    continue
                self._ids.append(rid)
                self._sizes[rid] = size
                self._bytes += size
        if self.repaired:
            log.warning("dataset: deleted %d leftover file(s) of interrupted writes in %s", self.repaired,
                        self.folder)

    def add(self, record_id: str, jpeg: bytes, document: bytes) -> list[str]:
        """Write one record atomically, then evict the oldest past the bounds: the ids evicted (the new record
        itself when it is the oldest). OSError when the disk refuses (nothing half-written stays)."""
        image = self.folder / f"{record_id}.jpg"
        meta = self.folder / f"{record_id}.json"
        _write_atomic(image, jpeg)
        try:
            _write_atomic(meta, document)
        except OSError:
            image.unlink(missing_ok=True)
            raise
        with self._lock:
            if record_id in self._sizes:  # rewritten (a later revision of the same frame)
                self._bytes -= self._sizes[record_id]
            else:
                bisect.insort(self._ids, record_id)
            self._sizes[record_id] = len(jpeg) + len(document)
            self._bytes += self._sizes[record_id]
        return self._evict()

    def _evict(self) -> list[str]:
        gone: list[str] = []
        while True:
            with self._lock:
                if not self._ids or (len(self._ids) <= self.max_frames and self._bytes <= self.max_bytes):
                    break
                rid = self._ids.pop(0)
                self._bytes -= self._sizes.pop(rid)
                self.evicted += 1
            (self.folder / f"{rid}.json").unlink(missing_ok=True)  # un-commit first
            (self.folder / f"{rid}.jpg").unlink(missing_ok=True)
            gone.append(rid)
        if gone:
            log.debug("dataset: evicted %d oldest record(s)", len(gone), extra={"first": gone[0]})
        return gone

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._ids)


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
