"""The import rules of DESIGN.md ("Repository layout"), read from the source by scripts/import_graph.py:

* runtime-loads: nothing the camera-side daemon runs (core, the stages, runtime, ops) loads the offline tooling,
  the CLI, the gateway program, torch, ultralytics or ollama, directly or through other modules;
* stage-imports-stage: a stage (capture, prefilter, triage, escalation, publish, outputs) imports no other stage;
* core-imports: core imports only the standard library, numpy and agent.errors;
* ops-imports-runtime: ops reads the runtime's snapshots and imports nothing of agent.runtime, not even a type.

``python scripts/import_graph.py`` prints the graph, each layer's dependencies and the violations. The ones still
known are in ALLOWED, each with its reason; an entry that no longer occurs fails too, so the list only shrinks.
"""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _import_graph() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look the module up
    spec.loader.exec_module(module)
    return module


ig = _import_graph()

ALLOWED: dict[str, str] = {
    # "rule: importer -> imported": why it is still there
}


def _key(violation: object) -> str:
    return f"{violation.rule}: {violation.importer} -> {violation.imported}"  # type: ignore[attr-defined]


def test_the_layers_keep_the_import_rules() -> None:
    found = ig.violations(ig.graph(ROOT))
    new = [str(v) for v in found if _key(v) not in ALLOWED]
    assert new == [], "these imports break the rules of DESIGN.md (see scripts/import_graph.py):\n" + "\n".join(new)


def test_the_allow_list_holds_only_what_still_breaks_a_rule() -> None:
    stale = sorted(set(ALLOWED) - {_key(v) for v in ig.violations(ig.graph(ROOT))})
    assert stale == [], f"no longer broken: remove from ALLOWED: {stale}"


def test_the_daemon_loads_no_offline_module() -> None:
    """The same seen at run time: a fresh interpreter that imports the CLI and the agent's service (what
    `edge-agent run` loads) has no tooling, gateway, torch, ultralytics or ollama in sys.modules."""
    service = "agent.runtime.service"
    code = (f"import sys, agent.cli.main, {service}; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('agent.', 'torch', 'ultralytics', "
            "'ollama')))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    assert service in out
    unwanted = [p for p in (*ig.OFFLINE, *ig.OFFLINE_EXTERNAL) if p != "agent.cli"]  # the CLI is the way in
    assert [m for m in out if any(m == p or m.startswith(p + ".") for p in unwanted)] == []


def _tree(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for name, text in {"agent/__init__.py": "", **files}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("files", "expected"), [
    # core may use numpy, the standard library and agent.errors, nothing else
    ({"agent/core/__init__.py": "", "agent/errors.py": "",
      "agent/core/event.py": "import json\nimport numpy\nfrom agent.errors import X\nimport yaml\n"},
     ["core-imports: agent.core.event -> yaml"]),
    # a stage importing another stage, even only for a type
    ({"agent/triage/__init__.py": "", "agent/prefilter/__init__.py": "", "agent/prefilter/detection.py": "",
      "agent/triage/policy.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                "    from agent.prefilter.detection import D\n"},
     ["stage-imports-stage: agent.triage.policy -> agent.prefilter.detection"]),
    # the runtime loading the tooling through a module outside the layers, named where it crosses over
    ({"agent/runtime/__init__.py": "", "agent/runtime/service.py": "import agent.config.loader\n",
      "agent/config/__init__.py": "", "agent/config/loader.py": "def f():\n    from agent.tooling.report import r\n",
      "agent/tooling/__init__.py": "", "agent/tooling/report.py": "import torch\n"},
     ["runtime-loads: agent.config.loader -> agent.tooling.report (loaded by agent.runtime.service)"]),
    # ops reads snapshots: not even a type of the runtime
    ({"agent/ops/__init__.py": "", "agent/runtime/__init__.py": "", "agent/runtime/service.py": "",
      "agent/ops/metrics.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from agent.runtime.service import AgentService\n"},
     ["ops-imports-runtime: agent.ops.metrics -> agent.runtime.service"]),
    # ... but not under TYPE_CHECKING, which loads nothing; and ollama is offline too
    ({"agent/ops/__init__.py": "", "agent/gateway/__init__.py": "", "agent/gateway/server.py": "",
      "agent/ops/health.py": "import typing\nif typing.TYPE_CHECKING:\n    from agent.gateway.server import S\n"
                             "import ollama\n"},
     ["runtime-loads: agent.ops.health -> ollama (loaded by agent.ops.health)"]),
])
def test_each_rule_is_seen(files: dict[str, str], expected: list[str], tmp_path: pathlib.Path) -> None:
    assert [str(v) for v in ig.violations(ig.graph(_tree(tmp_path, files)))] == expected
