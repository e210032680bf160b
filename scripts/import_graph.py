"""The package import graph of ``agent/``, each layer's dependencies, and the import rules it breaks.

    python scripts/import_graph.py            # packages, layers, rule violations (exit 1 if any)
    python scripts/import_graph.py --modules  # also every module's imports of agent modules

Read from the source with ``ast``, nothing imported. An import counts wherever it is written (module
level or inside a function: either loads the module when it runs), except under ``if TYPE_CHECKING:``,
which loads nothing and counts only for the structure rules (a stage importing another stage for a type
is still a stage depending on another). Importing ``agent.a.b`` runs ``agent/__init__.py`` and
``agent/a/__init__.py`` too, so those are part of what it loads.

The rules (DESIGN.md, "Repository layout"):

* ``runtime-loads``: nothing the camera-side daemon runs (core, the stages, runtime, ops) loads, directly
  or through others, the offline tooling, the CLI, the gateway program, or torch, ultralytics, ollama.
* ``stage-imports-stage``: a stage (capture, prefilter, triage, escalation, publish, outputs) imports
  no other stage; what they share lives in core.
* ``core-imports``: core imports only the standard library, numpy and ``agent.errors``.
* ``ops-imports-runtime``: ops (health, metrics, doctor, sd_notify) reads the snapshots the runtime hands it and
  imports nothing of ``agent.runtime``, not even for a type.

``tests/test_import_rules.py`` runs the same checks, with an allow-list of the violations still known.
"""

from __future__ import annotations

import argparse
import ast
import collections
import pathlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]

STAGES = ("capture", "prefilter", "triage", "escalation", "publish", "outputs")
RUNTIME = ("core", *STAGES, "runtime", "ops")
"""Packages (second level of ``agent.``) of the camera-side daemon."""
OFFLINE = ("agent.tooling", "agent.cli", "agent.gateway", "agent.training")
"""What the daemon never loads: the tooling (and training, until it moves there), the CLI, the gateway program."""
OFFLINE_EXTERNAL = ("torch", "torchvision", "ultralytics", "ollama")
CORE_ALLOWED = ("agent.core", "agent.errors", "numpy")


@dataclass(frozen=True)
class Import:
    target: str  # an agent module ("agent.core.event") or an external top-level name ("numpy")
    line: int
    typing_only: bool  # under `if TYPE_CHECKING:`


@dataclass(frozen=True)
class Violation:
    """A broken rule, named by the import that breaks it: ``importer`` imports ``imported`` itself."""

    rule: str
    importer: str
    imported: str
    note: str = ""  # runtime-loads: which daemon modules load it that way

    def __str__(self) -> str:
        return f"{self.rule}: {self.importer} -> {self.imported}" + (f" ({self.note})" if self.note else "")


def modules(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
    """Every module of the agent package by dotted name (packages by their ``__init__``)."""
    found = {}
    for path in sorted((root / "agent").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, typing_only: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, True
                yield from _walk(stmt, True)
            for stmt in child.orelse:
                yield stmt, typing_only
                yield from _walk(stmt, typing_only)
            continue
        yield child, typing_only
        yield from _walk(child, typing_only)


def _resolve(name: str, known: dict[str, pathlib.Path]) -> str:
    """An agent name to the module that defines it: ``agent.a.b.func`` -> ``agent.a.b``."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str, path: pathlib.Path, known: dict[str, pathlib.Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: list[Import] = []
    for node, typing_only in _walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] if base.startswith("agent") else [base]
        for name in names:
            target = _resolve(name, known) if name.split(".")[0] == "agent" else name.split(".")[0]
            if target and target != module and target != "__future__":
                out.append(Import(target, getattr(node, "lineno", 0), typing_only))
    return out


def graph(root: pathlib.Path = ROOT) -> dict[str, list[Import]]:
    known = modules(root)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def package_of(module: str) -> str:
    """``agent.publish.outbox`` -> ``publish``; ``agent.service`` -> ``service``; external names as they are."""
    parts = module.split(".")
    return parts[1] if parts[0] == "agent" and len(parts) > 1 else module


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def loaded_by(start: str, g: dict[str, list[Import]]) -> dict[str, tuple[str, ...]]:
    """Every module and external name ``start`` loads when imported, each with one chain that loads it."""
    chains: dict[str, tuple[str, ...]] = {start: ()}
    queue = collections.deque([start])
    while queue:
        current = queue.popleft()
        nexts = [imp.target for imp in g.get(current, ()) if not imp.typing_only]
        for target in [t for name in nexts for t in (*_parents(name), name)]:
            if target not in chains:
                chains[target] = (*chains[current], current) if current != start else ()
                if target in g:
                    queue.append(target)
    del chains[start]
    return chains


def _is_runtime(module: str) -> bool:
    return package_of(module) in RUNTIME


def _under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _offline(module: str) -> bool:
    return _under(module, OFFLINE) or module in OFFLINE_EXTERNAL


def violations(g: dict[str, list[Import]]) -> list[Violation]:
    found: list[Violation] = []
    loaders: dict[tuple[str, str], list[str]] = collections.defaultdict(list)  # (importer, offline) -> daemon modules
    for module in sorted(g):
        if _is_runtime(module):
            for target, via in loaded_by(module, g).items():
                if _offline(target):  # named by the import that crosses into the offline modules
                    chain = (module, *via, target)
                    cross = next(i for i, m in enumerate(chain) if _offline(m))
                    loaders[(chain[cross - 1], chain[cross])].append(module)
        pkg = package_of(module)
        for imp in g[module]:
            other = package_of(imp.target)
            if pkg in STAGES and other in STAGES and other != pkg and imp.target.startswith("agent."):
                found.append(Violation("stage-imports-stage", module, imp.target))
            if pkg == "ops" and other == "runtime" and imp.target.startswith("agent."):
                found.append(Violation("ops-imports-runtime", module, imp.target))
            if pkg == "core" and not (_under(imp.target, CORE_ALLOWED)
                                      or imp.target.split(".")[0] in sys.stdlib_module_names):
                found.append(Violation("core-imports", module, imp.target))
    for (importer, target), by in loaders.items():
        if any(imp.startswith(target + ".") for i, imp in loaders if i == importer):
            continue  # a package loaded as the parent of its module that is named too
        by = sorted(set(by))
        others = f" and {len(by) - 1} more" if len(by) > 1 else ""
        found.append(Violation("runtime-loads", importer, target, f"loaded by {by[0]}{others}"))
    return sorted(set(found), key=str)


def print_report(g: dict[str, list[Import]], show_modules: bool) -> list[Violation]:
    pkg_edges: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    external: dict[str, set[str]] = collections.defaultdict(set)
    for module, imps in g.items():
        for imp in imps:
            if imp.target.startswith("agent"):
                other = package_of(imp.target)
                if other != package_of(module) and imp.target != "agent":
                    pkg_edges[package_of(module)][other] += 1
            elif imp.target not in sys.stdlib_module_names:
                external[package_of(module)].add(imp.target)
    print("# packages: the agent packages each imports (number of import statements), then outside packages")
    for pkg in sorted({package_of(m) for m in g if m != "agent"}):
        inside = ", ".join(f"{o} ({n})" for o, n in sorted(pkg_edges[pkg].items()))
        print(f"{pkg:12} -> {inside or '-'}")
        if external[pkg]:
            print(f"{'':12}    outside: {', '.join(sorted(external[pkg]))}")
    print("\n# layers: what each layer depends on")
    layer_of = {**{p: "stages" for p in STAGES}, "core": "core", "runtime": "runtime", "ops": "ops",
                "gateway": "gateway", "tooling": "tooling", "cli": "cli", "training": "tooling"}
    layers: dict[str, set[str]] = collections.defaultdict(set)
    for pkg, others in pkg_edges.items():
        for other in others:
            a, b = layer_of.get(pkg, pkg), layer_of.get(other, other)
            if a != b:
                layers[a].add(b)
    for layer in sorted({layer_of.get(package_of(m), package_of(m)) for m in g if m != "agent"}):
        print(f"{layer:12} -> {', '.join(sorted(layers[layer])) or '-'}")
    if show_modules:
        print("\n# modules")
        for module in sorted(g):
            targets = sorted({i.target + (" (typing)" if i.typing_only else "") for i in g[module]
                              if i.target.startswith("agent")})
            print(f"{module}: {', '.join(targets) or '-'}")
    found = violations(g)
    print(f"\n# rule violations: {len(found)}, each named by the import that breaks it")
    for v in found:
        print(f"  {v}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="also list every module's agent imports")
    args = parser.parse_args()
    return 1 if print_report(graph(), args.modules) else 0


if __name__ == "__main__":
    sys.exit(main())
