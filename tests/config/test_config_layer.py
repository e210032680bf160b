"""The config sits below the stages: validating a config (and its taxonomy) loads no stage, and the
taxonomy's pure model loads no config. (The cycle config -> prefilter -> config.loader -> taxonomy ->
config.loader's private functions is gone: agent.config.yamlfile is the public reader.)"""

from __future__ import annotations

import ast
import subprocess
import sys

STAGES = ("agent.capture", "agent.prefilter", "agent.triage", "agent.escalation", "agent.publish", "agent.runtime")


def _loaded_after(statement: str, prefixes: tuple[str, ...]) -> list[str]:
    code = (f"import sys\n{statement}\n"
            f"print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return list(ast.literal_eval(proc.stdout))


def test_loading_a_config_with_its_taxonomy_loads_no_stage() -> None:
    statement = ("from agent.config.loader import load_config\nfrom agent.config.models import ModelConfig\n"
                 "ModelConfig(providers=['cpu'])")
    assert _loaded_after(statement, STAGES) == []


def test_the_taxonomy_model_loads_no_config() -> None:
    assert _loaded_after("import agent.taxonomy", ("agent.config",)) == []
