"""CSV cells no spreadsheet runs (OWASP CSV injection), and read back exactly as they were."""

from __future__ import annotations

import pytest

from agent.csvsafe import read_cell, safe_cell


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+1", "'=1+1"),  # a formula
    ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),  # DDE
    ("-2+3", "'-2+3"),
    ("@SUM(1)", "'@SUM(1)"),
    ("\t=1", "'\t=1"),  # a tab, then a formula
    ("\r=1", "'\r=1"),
    ("'quoted", "''quoted"),  # a leading quote is doubled, so it reads back
    ("-0.5", "-0.5"),  # numbers stay numbers
    ("+3e-2", "+3e-2"),
    ("-", "-"),  # the "no value" placeholder
    ("scratch", "scratch"),  # plain text
    ("", ""),
])
def test_safe_cell(value: str, cell: str) -> None:
    assert safe_cell(value) == cell
    assert read_cell(cell) == value
