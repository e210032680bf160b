"""What ``edge-agent images`` does with the kept images: the filter from the command line (:func:`parse_time`,
:func:`build_query`), and the export (:func:`export`): a folder or a tar (``.tar``, ``.tar.gz``/``.tgz``) with
the JPEGs under ``images/`` (the store's own layout) and an index of the events, ``index.jsonl`` (one event per
line, as published, plus ``file``) and ``index.csv`` (one row per image: the fields a spreadsheet needs).

An export never overwrites: a target that exists is refused. It is made under a temporary name beside the target
and renamed into place when complete, so an interrupted export leaves no half-made target.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import pathlib
import re
import shutil
import tarfile
import time
from collections.abc import Iterable, Sequence
from typing import Any

from agent.csvsafe import safe_cell
from agent.errors import ImagesError
from agent.outputs.images.store import ImageRow, ImageStore, Query

__all__ = ["CSV_FIELDS", "VERDICTS", "build_query", "export", "parse_time"]

VERDICTS = ("pass", "defect", "uncertain")
CSV_FIELDS = ("event_id", "camera", "captured_at", "verdict", "decided_by", "sequence", "labels", "escalation",
              "bytes", "file")
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TIME_HELP = "an ISO 8601 time (2026-12-05T14:00:00Z, 2026-12-05T14:00 (UTC), 2026-12-05) or an age (30m, 12h, 7d)"


def parse_time(text: str, option: str, now: float | None = None) -> float:
    """``text`` as Unix time: an ISO 8601 date or time (UTC unless it says otherwise), or an age before ``now``."""
    now = time.time() if now is None else now
    age = _AGE.match(text.strip())
    if age:
        return now - float(age.group(1)) * _UNIT_S[age.group(2)]
    try:
        t = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ImagesError(f"{option} {text!r}: not a time; expected {_TIME_HELP}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def build_query(store: ImageStore, *, since: str | None, until: str | None, cameras: Sequence[str],
                verdicts: Sequence[str], event_ids: Sequence[str], known_cameras: Iterable[str] = (),
                now: float | None = None) -> Query:
    """The filter of a command line; ImagesError naming the bad option: a time that is not one, a range that is
    empty, a camera neither configured nor in the index, a verdict that is not one."""
    start = parse_time(since, "--since", now) if since else None
    end = parse_time(until, "--until", now) if until else None
    if start is not None and end is not None and start >= end:
        raise ImagesError(f"--since {since!r} is not before --until {until!r}: the range holds no time; give an "
                          "earlier --since or a later --until")
    known = set(store.cameras()) | set(known_cameras)
    unknown = [c for c in cameras if c not in known]
    if unknown:
        raise ImagesError(f"--camera {', '.join(map(repr, unknown))}: no such camera here; expected one of: "
                          f"{', '.join(sorted(known)) or '(none: no images kept yet)'}")
    bad = [v for v in verdicts if v not in VERDICTS]
    if bad:
        raise ImagesError(f"--verdict {', '.join(map(repr, bad))}: expected one of: {', '.join(VERDICTS)}")
    return Query(start, end, tuple(cameras), tuple(verdicts), tuple(event_ids))


def csv_row(row: ImageRow) -> dict[str, Any]:
    event = row.payload or {}
    tags = event.get("tags") or []
    return {"event_id": row.event_id, "camera": row.camera, "captured_at": row.captured_at, "verdict": row.verdict,
            "decided_by": event.get("decided_by", ""), "sequence": event.get("sequence", ""),
            "labels": ";".join(f"{t.get('label')}:{t.get('confidence')}" for t in tags),
            "escalation": (event.get("escalation") or {}).get("status", ""), "bytes": row.bytes,
            "file": f"images/{row.path}"}


def _is_tar(out: pathlib.Path) -> str | None:
    name = out.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "w:gz"
    return "w" if name.endswith(".tar") else None


def export(store: ImageStore, query: Query, out: pathlib.Path) -> int:
    """Export the images ``query`` picks to ``out`` (a new folder, or a new ``.tar``/``.tar.gz``); how many.
    ImagesError when ``out`` exists or cannot be written."""
    if out.exists():
        raise ImagesError(f"--out {out}: already exists; give a new folder or tar name (an export never "
                          "overwrites)")
    if not out.parent.is_dir():
        raise ImagesError(f"--out {out}: its folder {out.parent} does not exist")
    rows = [r for r in store.rows(query) if (store.root / r.path).is_file()]  # one evicted meanwhile: left out
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        mode = _is_tar(out)
        if mode is None:
            _write_folder(store, rows, staging)
        else:
            _write_tar(store, rows, staging, mode)
        os.replace(staging, out)
    except OSError as exc:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)
        raise ImagesError(f"--out {out}: cannot write the export ({exc.strerror or exc})") from exc
    return len(rows)


def _indexes(rows: Sequence[ImageRow]) -> tuple[bytes, bytes]:
    jsonl = "".join(json.dumps({**(r.payload or {"event_id": r.event_id, "camera": r.camera,
                                                 "verdict": r.verdict}), "file": f"images/{r.path}"},
                               separators=(",", ":")) + "\n" for r in rows)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: safe_cell(str(v)) for k, v in csv_row(r).items()} for r in rows)  # labels: VLM words
    return jsonl.encode(), text.getvalue().encode()


def _write_folder(store: ImageStore, rows: Sequence[ImageRow], folder: pathlib.Path) -> None:
    folder.mkdir()
    for r in rows:
        target = folder / "images" / r.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.root / r.path, target)
    jsonl, table = _indexes(rows)
    (folder / "index.jsonl").write_bytes(jsonl)
    (folder / "index.csv").write_bytes(table)


def _write_tar(store: ImageStore, rows: Sequence[ImageRow], path: pathlib.Path, mode: str) -> None:
    jsonl, table = _indexes(rows)
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, data in (("index.jsonl", jsonl), ("index.csv", table)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
        for r in rows:
            tar.add(store.root / r.path, arcname=f"images/{r.path}")
