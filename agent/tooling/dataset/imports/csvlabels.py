"""A CSV of image-level labels (a spreadsheet of inspected parts, Label Studio's or a MES export):
one row per image, for a classifier.

The first row names the columns: the image column is one of ``image``, ``file``, ``filename``,
``file_name`` or ``path``; the label column one of ``label``, ``class`` or ``category`` (case does not
matter; other columns are ignored). Image paths are relative to ``--images`` (default: the CSV's folder).
An optional ``split`` column (``train`` or ``val``) keeps the source's split; without it ``--val-fraction``
splits. Parsed with the standard library's ``csv`` module (quoting, commas in names).
"""

from __future__ import annotations

import csv
import pathlib

from agent.errors import DatasetError
from agent.tooling.dataset.imports.common import Item, Parsed, Split

__all__ = ["parse_csv"]

IMAGE_COLUMNS = ("image", "file", "filename", "file_name", "path")
LABEL_COLUMNS = ("label", "class", "category")


def _column(header: list[str], accepted: tuple[str, ...], what: str, path: pathlib.Path) -> int:
    folded = [h.strip().casefold() for h in header]
    for name in accepted:
        if name in folded:
            return folded.index(name)
    raise DatasetError(f"CSV file {path}: no {what} column in the header row ({', '.join(header) or 'empty'}); "
                       f"expected one of {', '.join(accepted)}")


def parse_csv(source: pathlib.Path, images: pathlib.Path | None) -> Parsed:
    """Read the CSV (see the module doc)."""
    if not source.is_file():
        raise DatasetError(f"CSV source {source}: {'not a file' if source.exists() else 'does not exist'}; "
                           "expected a .csv file with image and label columns")
    image_root = images if images is not None else source.parent
    try:
        with source.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"CSV file {source}: cannot read it ({exc})") from exc
    if not rows:
        raise DatasetError(f"CSV file {source} is empty; expected a header row and one row per image")
    header = rows[0]
    col_image = _column(header, IMAGE_COLUMNS, "image", source)
    col_label = _column(header, LABEL_COLUMNS, "label", source)
    folded = [h.strip().casefold() for h in header]
    col_split = folded.index("split") if "split" in folded else None
    parsed = Parsed(task="classify", names=(), items=[])
    seen: dict[str, tuple[int, Item]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"CSV file {source}, line {n}"
        if len(row) != len(header):
            parsed.orphans.append(f"{where}: {len(row)} fields, the header has {len(header)}: "
                                  f"{','.join(row)[:80]!r}")
            continue
        name, label = row[col_image].strip(), row[col_label].strip()
        item = Item(image=image_root / name, where=f"{where} ({name or 'no image'})", label=label or None)
        if not name:
            parsed.orphans.append(f"{where}: the {header[col_image]} field is empty; expected an image path")
            continue
        if not label:
            item.problems.append(f"{item.where}: the {header[col_label]} field is empty; expected the image's class")
        if col_split is not None:
            item.split = _split_of(row[col_split])
            if item.split is None:
                item.problems.append(f"{item.where}: split {row[col_split]!r}; expected train or val")
        first = seen.get(name)
        if first is not None:
            item.problems.append(f"{item.where}: {name} is listed twice (first at line {first[0]}); expected one "
                                 "row per image")
            first[1].problems.append(f"{first[1].where}: {name} is listed again at line {n}")
        else:
            seen[name] = (n, item)
        parsed.items.append(item)
    if not parsed.items and not parsed.orphans:
        raise DatasetError(f"CSV file {source} has a header but no rows; expected one row per image")
    return parsed


def _split_of(text: str) -> Split | None:
    value = text.strip().casefold()
    return "train" if value == "train" else "val" if value == "val" else None
