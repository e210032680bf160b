"""TensorRT plans on disk, each with a JSON sidecar that says what it was built from. No GPU needed.

Layout of the cache directory::

    conveyor-yolov8n.int8-trt.int8.b4.<key digest>.plan   the serialized engine
    conveyor-yolov8n.int8-trt.int8.b4.<key digest>.json   {"schema", "key": {...}, "plan_sha256", "plan_bytes", ...}

:meth:`EngineCache.lookup` returns an entry only when its sidecar parses, names the
wanted key and the plan file has the size and SHA-256 the sidecar recorded; a plan
without a readable sidecar, or whose bytes do not match, is corrupt: it is removed
(one warning) and rebuilt, never handed to TensorRT. :meth:`EngineCache.store`
writes both files atomically (temporary file, fsync, rename; the sidecar last, so a
crash between the two leaves a plan without a sidecar, which lookup treats as
corrupt) and removes the entries it supersedes: the same model file name,
precision and batch profile under an older key (a retrained model, a TensorRT
upgrade, another GPU). :meth:`EngineCache.get_or_build` is lookup, else build and store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import pathlib
import re
import tempfile
import time
from collections.abc import Callable
from typing import Any

from agent.errors import ModelError
from agent.prefilter.providers import ensure_writable_dir
from agent.prefilter.tensorrt.engine_key import EngineKey

__all__ = ["SIDECAR_SCHEMA", "CachedEngine", "EngineCache", "write_atomic"]

log = logging.getLogger(__name__)

SIDECAR_SCHEMA = "edge-agent/trt-engine/v1"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclasses.dataclass(frozen=True)
class CachedEngine:
    plan: pathlib.Path
    sidecar: pathlib.Path
    key: EngineKey
    record: dict[str, Any]

    def read_plan(self) -> bytes:
        return self.plan.read_bytes()


@dataclasses.dataclass(frozen=True)
class Superseded:
    """An entry for the same model file, precision and batch profile under another key."""

    sidecar: pathlib.Path
    changes: list[str]


class EngineCache:
    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = pathlib.Path(directory)

    def _stem(self, model_name: str, key: EngineKey) -> str:
        model = _UNSAFE.sub("_", pathlib.Path(model_name).stem) or "model"
        return f"{model}.{key.precision.replace('+', '-')}.b{key.batch.max}.{key.digest()}"

    def paths(self, model_name: str, key: EngineKey) -> tuple[pathlib.Path, pathlib.Path]:
        stem = self._stem(model_name, key)
        return self.directory / f"{stem}.plan", self.directory / f"{stem}.json"

    # -- reading ------------------------------------------------------------------------------------------

    def lookup(self, model_name: str, key: EngineKey) -> CachedEngine | None:
        """The valid entry for ``key``, or None (a corrupt or mislabelled one is removed on the way)."""
        plan, sidecar = self.paths(model_name, key)
        if not plan.exists() and not sidecar.exists():
            return None
        problem, record = self._check(plan, sidecar, key)
        if problem is None and record is not None:
            return CachedEngine(plan, sidecar, key, record)
        log.warning("TensorRT engine cache: %s %s; removing it and building again", plan.name, problem)
        self._remove(plan, sidecar)
        return None

    def _check(self, plan: pathlib.Path, sidecar: pathlib.Path,
               key: EngineKey) -> tuple[str | None, dict[str, Any] | None]:
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return "has no sidecar (an interrupted write?)", None
        except (OSError, ValueError) as exc:
            return f"has an unreadable sidecar ({exc})", None
        if not isinstance(record, dict) or record.get("schema") != SIDECAR_SCHEMA:
            return f"has a sidecar that is not {SIDECAR_SCHEMA}", None
        try:
            recorded = EngineKey.from_dict(record.get("key"))  # type: ignore[arg-type]
        except ValueError as exc:
            return f"has a sidecar with a bad key ({exc})", None
        if recorded != key:
            return "was built for another key (" + "; ".join(key.changes(recorded)) + ")", None
        try:
            size = plan.stat().st_size
        except FileNotFoundError:
            return "is missing (sidecar only)", None
        if size != record.get("plan_bytes"):
            return f"is corrupt ({size} bytes, the sidecar says {record.get('plan_bytes')})", None
        if _sha256(plan) != record.get("plan_sha256"):
            return "is corrupt (its SHA-256 is not the one the sidecar recorded)", None
        return None, record

    def superseded(self, model_name: str, key: EngineKey) -> list[Superseded]:
        """Entries for the same model file name, precision and batch profile under another key."""
        plan, _sidecar = self.paths(model_name, key)
        prefix = plan.name.rsplit(".", 2)[0] + "."  # <model>.<precision>.b<max>.
        out = []
        for path in sorted(self.directory.glob(f"{glob_escape(prefix)}*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                old = EngineKey.from_dict(record["key"])
            except (OSError, ValueError, KeyError, TypeError):
                out.append(Superseded(path, ["unreadable sidecar"]))
                continue
            if old != key and old.precision == key.precision and old.batch == key.batch:
                out.append(Superseded(path, key.changes(old)))
        return out

    # -- writing ------------------------------------------------------------------------------------------

    def store(self, model_name: str, key: EngineKey, plan_bytes: bytes, *, build_s: float = 0.0,
              extra: dict[str, Any] | None = None) -> CachedEngine:
        """Write the plan and its sidecar atomically; ModelError naming the directory when it is not writable."""
        if not plan_bytes:
            raise ModelError(f"TensorRT built an empty engine for {model_name}; nothing was cached")
        ensure_writable_dir(self.directory, "TensorRT engine cache directory")
        old = self.superseded(model_name, key)
        plan, sidecar = self.paths(model_name, key)
        record: dict[str, Any] = {
            "schema": SIDECAR_SCHEMA,
            "model_file": pathlib.Path(model_name).name,
            "key": key.as_dict(),
            "plan_file": plan.name,
            "plan_bytes": len(plan_bytes),
            "plan_sha256": hashlib.sha256(plan_bytes).hexdigest(),
            "created_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "build_s": round(build_s, 1),
            **(extra or {}),
        }
        try:
            write_atomic(plan, plan_bytes)
            write_atomic(sidecar, (json.dumps(record, indent=1) + "\n").encode())
        except OSError as exc:
            self._remove(plan, sidecar)
            raise ModelError(f"could not write the TensorRT engine to {self.directory}: {exc.strerror or exc}; set "
                             "model.engine_cache_dir (or --cache-dir) to a writable directory") from None
        for entry in old:
            log.info("TensorRT engine cache: removed %s (superseded: %s)", entry.sidecar.with_suffix(".plan").name,
                     "; ".join(entry.changes))
            self._remove(entry.sidecar.with_suffix(".plan"), entry.sidecar)
        return CachedEngine(plan, sidecar, key, record)

    def invalidate(self, entry: CachedEngine, reason: str) -> None:
        """Remove an entry TensorRT refused to load (it is rebuilt by the next get_or_build)."""
        log.warning("TensorRT engine cache: %s: %s; removing it", entry.plan.name, reason)
        self._remove(entry.plan, entry.sidecar)

    def get_or_build(self, model_name: str, key: EngineKey, build: Callable[[], bytes],
                     report: Callable[[str], None] | None = None) -> tuple[CachedEngine, bool]:
        """The cached entry for ``key`` (False), or a new one from ``build()`` (True)."""
        found = self.lookup(model_name, key)
        if found is not None:
            return found, False
        say = report or log.info
        for entry in self.superseded(model_name, key):
            say(f"TensorRT engine for {model_name} is out of date ({'; '.join(entry.changes)}): building a new one")
        ensure_writable_dir(self.directory, "TensorRT engine cache directory")  # fail before minutes of building
        t0 = time.monotonic()
        plan_bytes = build()
        return self.store(model_name, key, plan_bytes, build_s=time.monotonic() - t0), True

    @staticmethod
    def _remove(*paths: pathlib.Path) -> None:
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("TensorRT engine cache: could not remove %s: %s", path, exc)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: pathlib.Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

