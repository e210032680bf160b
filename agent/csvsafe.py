"""CSV cells that a spreadsheet does not run: the guard against formula injection (OWASP "CSV Injection").

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is taken by Excel, LibreOffice
and Google Sheets for a formula (``=HYPERLINK(...)``, ``@SUM(...)``, DDE). Strings in our CSV files come from
outside (file names, camera ids, class names, a VLM's labels, broker errors), so every cell that starts that
way is written with a leading ``'`` (shown as text, not run); a cell that already starts with ``'`` gets one
more, so :func:`read_cell` gives back exactly what was written. Numbers (``-0.5``) and a lone ``-`` (no
value) are left as they are.
"""

from __future__ import annotations

import re

__all__ = ["read_cell", "safe_cell", "safe_row"]

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def safe_cell(value: str) -> str:
    """``value`` as a CSV cell no spreadsheet evaluates."""
    if value.startswith(_TRIGGERS) and value != "-" and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def safe_row(values: list[str]) -> list[str]:
    return [safe_cell(v) for v in values]


def read_cell(cell: str) -> str:
    """The value :func:`safe_cell` wrote as ``cell``."""
    if cell.startswith("'") and cell[1:].startswith(_TRIGGERS):
        return cell[1:]
    return cell
