"""models/Modelfile: the inspection-tuned Ollama variant parses and uses only valid directives and
PARAMETER names (api-facts section 1.5 / Ollama's docs/modelfile.mdx)."""

from __future__ import annotations

import pathlib
import re

MODELFILE = pathlib.Path(__file__).resolve().parents[2] / "models" / "Modelfile"
DIRECTIVES = {"FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE", "REQUIRES"}
PARAMETERS = {"num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p", "repeat_last_n",
              "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty", "stop", "num_ctx",
              "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread"}
NUMERIC = PARAMETERS - {"stop", "use_mmap"}


def parse(text: str) -> list[tuple[str, str]]:
    """(directive, argument) pairs, as Ollama's parser reads them: comments, blank lines, triple-quoted blocks."""
    commands: list[tuple[str, str]] = []
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        directive, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if rest.startswith('"""'):
            block = rest[3:]
            while not block.endswith('"""'):
                block += "\n" + next(lines)
            rest = block[:-3]
        commands.append((directive.upper(), rest))
    return commands


def test_the_modelfile_builds_on_llava_with_valid_parameters() -> None:
    commands = parse(MODELFILE.read_text(encoding="utf-8"))
    assert all(directive in DIRECTIVES for directive, _ in commands), commands
    assert commands[0] == ("FROM", "llava:7b")
    params: dict[str, list[str]] = {}
    for directive, argument in commands:
        if directive == "PARAMETER":
            name, _, value = argument.partition(" ")
            assert name in PARAMETERS, f"PARAMETER {name} is not an Ollama parameter"
            if name in NUMERIC:
                float(value)
            params.setdefault(name, []).append(value.strip())
    assert float(params["temperature"][0]) <= 0.2
    assert params["num_ctx"] == ["4096"]
    system = dict(commands)["SYSTEM"]
    assert "JSON" in system and all(kind in system for kind in ("scratch", "hole", "stain", "missing"))


def test_the_header_says_how_to_create_it() -> None:
    header = MODELFILE.read_text(encoding="utf-8").split("FROM", 1)[0]
    assert re.search(r"^#\s+ollama create edge-inspector -f models/Modelfile$", header, re.MULTILINE)
