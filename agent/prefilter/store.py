"""The model store beside a running model: the files a promotion replaced, kept for ``models rollback``.

The agent runs the file at ``model.path``. A model travels with its sidecars:

    <stem>.onnx        the model (the name the config gives)
    <stem>.gate.json   its INT8 accuracy gate record (``models quantize``), when it has one
    <stem>.json        its metadata sidecar (class names for an export without metadata), when it has one
    <stem>.md          its model card, when it has one

(the card of a candidate ``x.int8.onnx`` written by ``models train`` or ``models quantize`` is ``x.md``:
see :func:`card_of`). Installing a model replaces each file atomically: the new content is copied to a
temporary file in the same folder, flushed to disk, then ``os.replace``-d over the old one; a sidecar the
new model does not have is removed. The model file itself is replaced after its gate record and metadata,
so a reader that sees the new model sees its records.

The store lives in ``<model folder>/.history/``:

    .history/<UTC time>-<sha256[:12]>/   one entry: the files that were installed, under their installed
                                         names, and entry.json (when, why, digest, model id, kind)
    .history/promotions.jsonl            one JSON line per promotion and rollback (when, from, to, metrics)
    .history/.lock                       held (flock) while a promotion or rollback changes anything

Entries are of two kinds. ``replaced``: the model a promotion took out; ``models rollback`` puts the
newest one back and removes it from the store (a second rollback goes one promotion further back).
``rolled_back``: the model a rollback took out, kept for inspection (promote it again by its path);
a rollback never restores one. The store keeps the newest ``keep`` entries (default 5).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any, Literal

from agent.errors import ModelError
from agent.prefilter.model_info import file_digest

__all__ = ["HISTORY_DIR", "InstalledFiles", "ModelStore", "StoredModel", "card_of", "sidecars_of"]

HISTORY_DIR = ".history"
LOG_NAME = "promotions.jsonl"
ENTRY_FILE = "entry.json"
DEFAULT_KEEP = 5
_LOG_LINES_KEPT = 500  # the log is trimmed to its newest lines beyond this
_FLAVOUR_SUFFIXES = (".int8", ".int8-trt")  # `models quantize` names its INT8 files <stem><suffix>.onnx

Role = Literal["gate", "meta", "card"]
ROLES: tuple[Role, ...] = ("gate", "meta", "card")
EntryKind = Literal["replaced", "rolled_back"]


def _sidecar(model: pathlib.Path, role: Role) -> pathlib.Path:
    suffix = {"gate": ".gate.json", "meta": ".json", "card": ".md"}[role]
    return model.with_suffix(suffix)


def card_of(model: pathlib.Path) -> pathlib.Path | None:
    """The model card of a model file: ``<stem>.md``, else for ``x.int8.onnx`` / ``x.int8-trt.onnx`` the card
    of its FP32 source ``x.md`` (one card describes both); None when neither exists."""
    own = _sidecar(model, "card")
    if own.is_file():
        return own
    for suffix in _FLAVOUR_SUFFIXES:
        if model.stem.endswith(suffix):
            source = model.with_name(model.stem[: -len(suffix)] + ".md")
            if source.is_file():
                return source
    return None


def sidecars_of(model: pathlib.Path, card_fallback: bool = True) -> dict[Role, pathlib.Path]:
    """The sidecar files a model file has (gate record, metadata, card), by role. An installed model's card is
    only its own ``<stem>.md`` (``card_fallback`` False): that is the one file installing a card writes."""
    found: dict[Role, pathlib.Path] = {}
    for role in ("gate", "meta"):
        path = _sidecar(model, role)
        if path.is_file():
            found[role] = path
    card = card_of(model) if card_fallback else (_sidecar(model, "card") if _sidecar(model, "card").is_file()
                                                 else None)
    if card is not None:
        found["card"] = card
    return found


@dataclasses.dataclass(frozen=True)
class InstalledFiles:
    """A model file and its sidecars, as they are to be installed (sources of the copies)."""

    model: pathlib.Path
    sidecars: dict[Role, pathlib.Path]

    @classmethod
    def of(cls, model: pathlib.Path, card_fallback: bool = True) -> InstalledFiles:
        return cls(model, sidecars_of(model, card_fallback))


@dataclasses.dataclass(frozen=True)
class StoredModel:
    """One store entry."""

    folder: pathlib.Path
    kind: EntryKind
    saved_at: str  # RFC 3339, UTC
    target: str  # the installed model's file name (model.path's name)
    sha256: str
    model_id: str
    note: str
    sidecars: dict[Role, str]  # role -> file name inside the folder

    @property
    def model(self) -> pathlib.Path:
        return self.folder / self.target

    def files(self) -> InstalledFiles:
        return InstalledFiles(self.model, {role: self.folder / name for role, name in self.sidecars.items()})

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "saved_at": self.saved_at, "target": self.target, "sha256": self.sha256,
                "model_id": self.model_id, "note": self.note, "sidecars": dict(self.sidecars)}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _fsync_dir(folder: pathlib.Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FILE_MODE = 0o644
"""The mode of every installed or stored file: readable by the agent's (dynamic) user, writable by the owner
only, never executable, whatever the candidate's file had (its mode is not copied)."""


def _copy_synced(src: pathlib.Path, dst: pathlib.Path) -> None:
    with src.open("rb") as fin, dst.open("wb") as fout:
        os.fchmod(fout.fileno(), FILE_MODE)
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


class ModelStore:
    """The store of one installed model file (``model.path``). Every method that changes files expects the
    caller to hold :meth:`locked`."""

    def __init__(self, model_path: pathlib.Path, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ValueError(f"keep {keep}: expected at least 1 stored model")
        self.model_path = pathlib.Path(model_path)
        self.root = self.model_path.parent / HISTORY_DIR
        self.keep = keep

    @property
    def log_path(self) -> pathlib.Path:
        return self.root / LOG_NAME

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelError(f"cannot create the model store {self.root}: {exc.strerror or exc}; the folder of "
                             f"model.path ({self.model_path.parent}) must be writable by whoever promotes") from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock: one promotion or rollback at a time per model folder."""
        self._ensure_root()
        with (self.root / ".lock").open("a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ModelError(f"another promotion or rollback of {self.model_path} is running (it holds "
                                 f"{self.root / '.lock'}); try again when it has finished") from None
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # -- entries --------------------------------------------------------------------------------------

    def entries(self) -> list[StoredModel]:
        """This model file's entries, newest first (entries of other model files in the folder are skipped)."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted((p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                             key=lambda p: p.name, reverse=True):
            entry = self._read_entry(folder)
            if entry is not None and entry.target == self.model_path.name:
                found.append(entry)
        return found

    @staticmethod
    def _read_entry(folder: pathlib.Path) -> StoredModel | None:
        try:
            raw = json.loads((folder / ENTRY_FILE).read_text())
            return StoredModel(folder=folder, kind=raw["kind"], saved_at=raw["saved_at"], target=raw["target"],
                               sha256=raw["sha256"], model_id=raw["model_id"], note=raw.get("note", ""),
                               sidecars=dict(raw.get("sidecars", {})))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # not an entry (or a damaged one): never restored

    def latest(self, kind: EntryKind = "replaced") -> StoredModel | None:
        return next((e for e in self.entries() if e.kind == kind), None)

    def save_installed(self, kind: EntryKind, note: str) -> StoredModel:
        """Copy the installed model and its sidecars into a new entry (written under a temporary name, then
        renamed: an entry is complete or absent)."""
        if not self.model_path.is_file():
            raise ModelError(f"model {self.model_path} does not exist; nothing to keep in the store")
        self._ensure_root()
        files = InstalledFiles.of(self.model_path, card_fallback=False)
        digest = file_digest(self.model_path)
        now = _now()
        name = f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{digest[:12]}"
        staging = self.root / f".{name}.tmp"
        staging.mkdir()
        sidecars: dict[Role, str] = {}
        try:
            _copy_synced(files.model, staging / self.model_path.name)
            for role, path in files.sidecars.items():
                stored = _sidecar(self.model_path, role).name  # under its installed name
                _copy_synced(path, staging / stored)
                sidecars[role] = stored
            entry = StoredModel(folder=self.root / name, kind=kind, saved_at=now.isoformat(timespec="seconds"),
                                target=self.model_path.name, sha256=digest,
                                model_id=f"{self.model_path.stem}@{digest[:12]}", note=note, sidecars=sidecars)
            (staging / ENTRY_FILE).write_text(json.dumps(entry.as_json(), indent=1) + "\n")
            os.replace(staging, entry.folder)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return entry

    def drop(self, entry: StoredModel) -> None:
        shutil.rmtree(entry.folder, ignore_errors=True)

    def prune(self) -> list[StoredModel]:
        """Remove the oldest entries beyond ``keep``; returns the removed ones."""
        removed = self.entries()[self.keep:]
        for entry in removed:
            self.drop(entry)
        return removed

    def verify(self, entry: StoredModel) -> None:
        """ModelError unless the entry's model file is there with the digest it was saved with."""
        if not entry.model.is_file():
            raise ModelError(f"store entry {entry.folder} has no model file {entry.target}; it cannot be restored")
        digest = file_digest(entry.model)
        if digest != entry.sha256:
            raise ModelError(f"store entry {entry.folder}: {entry.target} has sha256 {digest[:12]}, saved as "
                             f"{entry.sha256[:12]}; the stored file was changed and is not restored")
        for role, name in entry.sidecars.items():
            if not (entry.folder / name).is_file():
                raise ModelError(f"store entry {entry.folder}: its {role} file {name} is missing")

    # -- installing ------------------------------------------------------------------------------------

    def install(self, files: InstalledFiles) -> None:
        """Replace the installed model and its sidecars with ``files`` (see the module doc for the order)."""
        target = self.model_path
        folder = target.parent
        staged: list[tuple[pathlib.Path, pathlib.Path]] = []  # (temporary file, its final name), in order
        tag = f".promote-{os.getpid()}.tmp"
        try:
            for role in ("gate", "meta"):
                source = files.sidecars.get(role)
                if source is not None:
                    final = _sidecar(target, role)
                    staged.append((final.with_name("." + final.name + tag), final))
                    _copy_synced(source, staged[-1][0])
            staged.append((target.with_name("." + target.name + tag), target))
            _copy_synced(files.model, staged[-1][0])
            card = files.sidecars.get("card")
            if card is not None:
                final = _sidecar(target, "card")
                staged.append((final.with_name("." + final.name + tag), final))
                _copy_synced(card, staged[-1][0])
        except OSError as exc:
            for tmp, _final in staged:
                tmp.unlink(missing_ok=True)
            raise ModelError(f"cannot write the new model beside {target}: {exc.strerror or exc}") from exc
        gone = [_sidecar(target, role) for role in ROLES if role not in files.sidecars]
        for tmp, final in staged:
            os.replace(tmp, final)
        for path in gone:
            path.unlink(missing_ok=True)
        _fsync_dir(folder)

    # -- the log -----------------------------------------------------------------------------------------

    def append_log(self, record: dict[str, Any]) -> None:
        self._ensure_root()
        lines = self.log_path.read_text().splitlines() if self.log_path.is_file() else []
        lines.append(json.dumps(record, sort_keys=False))
        tmp = self.log_path.with_name(f".{LOG_NAME}.{os.getpid()}.tmp")
        tmp.write_text("\n".join(lines[-_LOG_LINES_KEPT:]) + "\n")
        os.replace(tmp, self.log_path)

    def read_log(self) -> list[dict[str, Any]]:
        if not self.log_path.is_file():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    out.append(doc)
        return out
