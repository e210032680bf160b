"""No module in agent/ or scripts/ over 500 lines, no function over 60 (DESIGN.md, issue #22).

Generated code (the gRPC stubs, ``*_pb2*.py``) is left out. A function counts from its ``def`` line to its
last line, docstring included; a nested function counts on its own and inside the one around it.
Exceptions live in ALLOWED, each with its reason; an entry that no longer exceeds its limit fails too,
so the list only shrinks.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

ALLOWED: dict[str, str] = {
    # "agent/x.py" (a module) or "agent/x.py::Class.function": why it is still over its limit
}


def sources(root: pathlib.Path = ROOT) -> Iterator[pathlib.Path]:
    for folder in ("agent", "scripts"):
        for path in sorted((root / folder).rglob("*.py")):
            if not path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                yield path


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(qualified name, lines) of every function and method, nested ones too."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            end = node.end_lineno if node.end_lineno is not None else node.lineno
            yield f"{prefix}{node.name}", end - node.lineno + 1
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def oversized(root: pathlib.Path = ROOT) -> dict[str, str]:
    """Every module and function over its limit: key -> what it measures."""
    found: dict[str, str] = {}
    for path in sources(root):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(root).as_posix()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            found[rel] = f"{lines} lines (limit {MAX_MODULE_LINES})"
        for name, length in _functions(ast.parse(text, rel)):
            if length > MAX_FUNCTION_LINES:
                found[f"{rel}::{name}"] = f"{length} lines (limit {MAX_FUNCTION_LINES})"
    return found


def test_no_module_or_function_over_its_limit() -> None:
    found = oversized()
    new = {key: size for key, size in found.items() if key not in ALLOWED}
    assert new == {}, "split these (or, with a reason, add them to ALLOWED):\n" + "\n".join(
        f"  {key}: {size}" for key, size in sorted(new.items()))


def test_the_allow_list_holds_only_what_is_still_too_long() -> None:
    stale = sorted(set(ALLOWED) - set(oversized()))
    assert stale == [], f"within the limits now: remove from ALLOWED: {stale}"


@pytest.mark.parametrize(("source", "expected"), [
    ("def f():\n" + "    x = 1\n" * 60, {"m.py::f": "61 lines (limit 60)"}),  # 61 lines with its def
    ("def f():\n" + "    x = 1\n" * 59, {}),  # exactly 60: fine
    ("class C:\n    async def g(self):\n" + "        x = 1\n" * 61, {"m.py::C.g": "62 lines (limit 60)"}),
    ("x = 1\n" * 501, {"m.py": "501 lines (limit 500)"}),
])
def test_the_measure(source: str, expected: dict[str, str], tmp_path: pathlib.Path) -> None:
    (tmp_path / "agent").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "agent" / "m.py").write_text(source, encoding="utf-8")
    (tmp_path / "agent" / "x_pb2.py").write_text("x = 1\n" * 900, encoding="utf-8")  # generated: left out
    assert oversized(tmp_path) == {f"agent/{k}": v for k, v in expected.items()}
