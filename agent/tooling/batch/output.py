"""Batch tagging's output file (I/O): JSON Lines, CSV or one JSON array of records.

* JSON Lines and CSV are appended and flushed after every item, so an interrupted run loses nothing it
  tagged. A last line cut short (a killed process) is dropped when the file is read back, and redone.
* JSON is written once, at the end, atomically (a temporary file renamed over FILE) from a JSON Lines work
  file next to it, ``FILE.partial.jsonl``, which an interrupted run leaves behind to resume from.
* When a run completes, the records are rewritten in item order if they are not in it already (new files
  were added to a folder between two runs), so that a resumed run's output equals an uninterrupted one's.

:meth:`OutputFile.open` reads what is there first: an existing FILE of another format than the one asked
for (or one that is not a tag output) is a BatchError, before anything is written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
from collections.abc import Mapping
from typing import IO, Any

from agent.csvsafe import read_cell, safe_row
from agent.errors import BatchError
from agent.tooling.batch.items import (
    CSV_COLUMNS,
    DoneItem,
    OutputFormat,
    done_from_record,
    done_from_row,
    item_sort_key,
    record_to_row,
    sniff_format,
    sorted_records,
)


def work_path(out: pathlib.Path) -> pathlib.Path:
    return out.with_name(out.name + ".partial.jsonl")


class OutputFile:
    """The output of one run; :meth:`open` it, :meth:`write` each record, :meth:`finish` or :meth:`close`."""

    def __init__(self, path: pathlib.Path, fmt: OutputFormat, done: dict[str, DoneItem], redo: bool = False) -> None:
        self.path = path
        self.redo = redo
        self.fmt = fmt
        self.done = done
        self._fh: IO[str] | None = None
        self._csv: Any = None

    @classmethod
    def open(cls, path: pathlib.Path, fmt: OutputFormat, redo: bool) -> OutputFile:
        """Check what is at ``path`` and read the items it holds (none with ``redo``); nothing is written yet."""
        found = _existing_format(path)
        if found not in (None, "empty", fmt):
            what = "is not a tag output" if found == "unknown" else f"holds {found} records"
            raise BatchError(f"--out {path} exists and {what}, but {fmt} was asked for; give another --out, or "
                             f"--format {found}" + (" to resume it" if found != "unknown" else ""))
        done: dict[str, DoneItem] = {}
        if not redo:
            if fmt == "json":
                if found == "json":
                    done.update(_read_json(path))
                if work_path(path).exists():
                    done.update(_read_jsonl(work_path(path), repair=False)[0])
            elif fmt == "jsonl" and found == "jsonl":
                done.update(_read_jsonl(path, repair=False)[0])
            elif fmt == "csv" and found == "csv":
                done.update(_read_csv(path))
        return cls(path, fmt, done, redo)

    @property
    def work_file(self) -> pathlib.Path:
        return work_path(self.path) if self.fmt == "json" else self.path

    def start(self) -> None:
        """Open for appending (truncating with ``redo``)."""
        target = self.work_file
        if self.redo:
            mode = "w"
        else:
            mode = "a"
            if self.fmt != "csv" and target.exists():
                _read_jsonl(target, repair=True)  # drop a line cut short
        new = mode == "w" or not target.exists() or target.stat().st_size == 0
        if self.fmt == "csv" and not new:
            _repair_csv(target)
        self._fh = target.open(mode, encoding="utf-8", newline="")
        if self.fmt == "csv":
            self._csv = csv.writer(self._fh)
            if new:
                self._csv.writerow(CSV_COLUMNS)
                self._fh.flush()

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record and flush it to the OS."""
        if self._fh is None:
            raise RuntimeError("OutputFile.write before start")
        if self.fmt == "csv":
            self._csv.writerow(safe_row(record_to_row(record)))  # no cell a spreadsheet would run
        else:
            self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Close without finishing (an interrupted run): the file (or work file) stays as it is, to resume."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def finish(self) -> None:
        """Close and put the records in item order; a JSON output is written from its work file and the work
        file removed."""
        self.close()
        if self.fmt == "json":
            work = self.work_file
            records = _jsonl_records(work) if work.exists() else []
            if not self.redo and _existing_format(self.path) == "json":  # resumed: its records, unless tagged again
                records += _json_records(self.path)
            _atomic_write(self.path, json.dumps(sorted_records(records), indent=1) + "\n")
            work.unlink(missing_ok=True)
        elif self.fmt == "jsonl":
            lines = [ln for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            keys = [item_sort_key(json.loads(ln)["item"]) for ln in lines]
            if keys != sorted(keys):
                order = sorted(range(len(lines)), key=lambda i: keys[i])
                _atomic_write(self.path, "".join(lines[i] + "\n" for i in order))
        else:
            with self.path.open(encoding="utf-8", newline="") as fh:
                rows: list[list[str]] = list(csv.reader(fh))
            body = rows[1:]
            keys = [item_sort_key(read_cell(r[0])) for r in body]
            if keys != sorted(keys):
                buf = io.StringIO()
                writer = csv.writer(buf)
                writer.writerow(CSV_COLUMNS)
                order = sorted(range(len(body)), key=lambda i: keys[i])
                writer.writerows([body[i] for i in order])
                _atomic_write(self.path, buf.getvalue())


def _decoded(row: dict[str, str]) -> dict[str, str]:
    """A CSV row as it was before :func:`safe_cell` (a short row's missing cells stay None)."""
    return {k: read_cell(v) if isinstance(v, str) else v for k, v in row.items()}


def _existing_format(path: pathlib.Path) -> str | None:
    if not path.exists():
        return None
    if path.is_dir():
        raise BatchError(f"--out {path} is a folder; name a file")
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return sniff_format(fh.read(4096))
    except OSError as exc:
        raise BatchError(f"--out {path} cannot be read: {exc.strerror or exc}") from exc


def _not_ours(path: pathlib.Path, exc: Exception) -> BatchError:
    return BatchError(f"--out {path} is not a tag output edge-agent can resume ({exc}); give another --out, "
                      f"or --redo to replace it")


def _read_jsonl(path: pathlib.Path, repair: bool) -> tuple[dict[str, DoneItem], int]:
    """Items in a JSON Lines file, and the byte length of its complete lines; with ``repair``, a last line cut
    short is cut off the file."""
    data = path.read_bytes()
    good = len(data) if data.endswith(b"\n") or not data else data.rfind(b"\n") + 1
    done: dict[str, DoneItem] = {}
    try:
        for line in data[:good].decode("utf-8").splitlines():
            if line.strip():
                key, item = done_from_record(json.loads(line))
                done[key] = item
    except (ValueError, KeyError, TypeError) as exc:
        raise _not_ours(path, exc) from exc
    if repair and good < len(data):
        with path.open("r+b") as fh:
            fh.truncate(good)
    return done, good


def _jsonl_records(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _json_records(path: pathlib.Path) -> list[dict[str, Any]]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise _not_ours(path, exc) from exc
    if not isinstance(records, list):
        raise _not_ours(path, TypeError("expected a JSON array of records"))
    return records


def _read_json(path: pathlib.Path) -> dict[str, DoneItem]:
    try:
        return dict(done_from_record(r) for r in _json_records(path))
    except (KeyError, TypeError) as exc:
        raise _not_ours(path, exc) from exc


def _read_csv(path: pathlib.Path) -> dict[str, DoneItem]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            text = fh.read()
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # a row cut short: redone
        return dict(done_from_row(_decoded(row)) for row in csv.DictReader(io.StringIO(text)))
    except (KeyError, TypeError, csv.Error) as exc:
        raise _not_ours(path, exc) from exc


def _repair_csv(path: pathlib.Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _atomic_write(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_records(path: pathlib.Path, fmt: OutputFormat) -> list[dict[str, Any]]:
    """Every record of a finished output, as JSON records (a CSV row's tags from its JSON cell; CSV has no
    ``escalation.defects``)."""
    if fmt == "json":
        return _json_records(path)
    if fmt == "jsonl":
        return _jsonl_records(path)
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [_decoded(row) for row in csv.DictReader(fh)]
    return [{"item": r["item"], "path": r["path"], "frame": int(r["frame"]) if r["frame"] else None,
             "verdict": r["verdict"], "tags": json.loads(r["tags"] or "[]"),
             "decided_by": r["decided_by"],
             "prefilter": {"model": r["model"]},
             "escalation": {"status": r["escalation_status"], "reason": r["escalation_reason"] or None}}
            for r in rows]
