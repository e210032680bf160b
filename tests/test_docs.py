"""The README and docs/ as a reader meets them: no broken relative link or anchor, and every YAML example
marked as a whole config is accepted by the same check as ``edge-agent config check``.

Every fenced ```yaml block in README.md and docs/*.md carries a marker on the line before it (blank lines
allowed between), saying what it is:

    <!-- yaml: agent-config -->     a whole agent config: `edge-agent config check` must accept it
    <!-- yaml: gateway-config -->   a whole gateway config: the gateway's loader must accept it
    <!-- yaml: taxonomy -->         a whole taxonomy file: `config check` of a config naming it must accept it
    <!-- yaml: fragment -->         a part of one (a section, a sketch with `...`): not checked

Relative paths in an example resolve as beside a config file in the repository root: `models/...` is the
shipped models folder, `taxonomy.yaml` is systemd/taxonomy.example.yaml.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import import_module

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KINDS = ("agent-config", "gateway-config", "taxonomy", "fragment", "fleet-manifest")  # the last: tests/fleet

_FENCE = re.compile(r"^\s*(```|~~~)")
_MARKER = re.compile(r"^\s*<!--\s*yaml:\s*([\w-]+)\s*-->\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")


@dataclass(frozen=True)
class Example:
    page: pathlib.Path
    line: int  # 1-based line of the opening fence
    kind: str  # one of KINDS, or "" when the block has no marker
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _yaml_blocks(page: pathlib.Path) -> Iterator[Example]:
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if not _FENCE.match(lines[i]):
            i += 1
            continue
        start, indent = i, len(lines[i]) - len(lines[i].lstrip())
        is_yaml = lines[i].strip().lstrip("`~").strip().lower() in ("yaml", "yml")
        i += 1
        while i < len(lines) and not _FENCE.match(lines[i]):
            i += 1
        if is_yaml:
            before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
            marker = _MARKER.match(before)
            body = "\n".join(ln[indent:] for ln in lines[start + 1:i]) + "\n"
            yield Example(page, start + 1, marker.group(1) if marker else "", body)
        i += 1


def _prose(page: pathlib.Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line outside fenced and indented code, code spans removed."""
    in_fence = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield number, _CODE_SPAN.sub("", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: pathlib.Path) -> set[str]:
    """Every heading's anchor on a page, with GitHub's -1, -2 ... for repeated ones."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose_with_code_spans(page):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            repeats = seen.get(base, 0)
            seen[base] = repeats + 1
            found.add(f"{base}-{repeats}" if repeats else base)
    return found


def _prose_with_code_spans(page: pathlib.Path) -> Iterator[tuple[int, str]]:
    in_fence = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            yield number, line


def broken_links(page: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    problems = []
    for number, line in _prose(page):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours to check here
                continue
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(root)}:{number}: link {target!r}"
            shown = dest.relative_to(root) if dest.is_relative_to(root) else dest
            if not dest.exists():
                problems.append(f"{where}: no such file {shown}")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                problems.append(f"{where}: no heading with anchor #{anchor} in {shown}")
    return problems


_REPO_PATH = re.compile(r"(?<![\w/.-])((?:agent|scripts|tests|systemd|proto|models|docs)/[\w./-]*[\w/])")


def missing_paths(page: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """Repository paths (``agent/...``, ``scripts/...``, ``tests/...``, ...) that the page names in code (spans,
    indented and fenced blocks) and that do not exist: files moved without their docs."""
    problems = []
    in_fence = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        code = line if in_fence or line.startswith("    ") else " ".join(_CODE_SPAN.findall(line))
        for path in _REPO_PATH.findall(code):
            if not (root / path.split("::")[0]).exists():
                problems.append(f"{page.relative_to(root)}:{number}: {path} does not exist")
    return problems


def _entry_point() -> Callable[[], None]:
    """The `edge-agent` console script's function, as pyproject.toml names it (so a move of the CLI is followed)."""
    scripts = (ROOT / "pyproject.toml").read_text(encoding="utf-8").partition("[project.scripts]")[2]
    spec = re.search(r'^edge-agent\s*=\s*"([\w.]+):(\w+)"', scripts, re.MULTILINE)
    assert spec is not None, "pyproject.toml's [project.scripts] names no edge-agent"
    module, name = spec.groups()
    func: Callable[[], None] = getattr(import_module(module), name)
    return func


def _config_check(file: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `edge-agent config check FILE` in this process; return its output, failing the test unless it exits 0."""
    monkeypatch.setattr(sys, "argv", ["edge-agent", "config", "check", str(file)])
    with pytest.raises(SystemExit) as exit_info:
        _entry_point()()
    out = capsys.readouterr()
    assert exit_info.value.code in (0, None), f"{out.out}{out.err}"
    return out.out


EXAMPLES = [ex for page in PAGES for ex in _yaml_blocks(page)]


def test_the_pages_exist() -> None:
    assert len(PAGES) > 10, "docs/ holds the reference the README links to"
    assert any(ex.kind == "agent-config" for ex in EXAMPLES), "at least one whole agent config is checked"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page: pathlib.Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_repository_paths_a_page_names_exist(page: pathlib.Path) -> None:
    assert missing_paths(page) == []


def test_every_yaml_example_says_what_it_is() -> None:
    unmarked = [f"{ex} (kind {ex.kind!r})" for ex in EXAMPLES if ex.kind not in KINDS]
    assert unmarked == [], f"put <!-- yaml: KIND --> before these ```yaml blocks, KIND one of {', '.join(KINDS)}"


@pytest.mark.parametrize("example", [ex for ex in EXAMPLES if ex.kind in KINDS[:3]], ids=str)
def test_whole_config_examples_pass_config_check(example: Example, tmp_path: pathlib.Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    for name in [n for n in os.environ if n.startswith(("EDGE_AGENT_", "EDGE_GATEWAY_"))]:
        monkeypatch.delenv(name)
    (tmp_path / "models").symlink_to(ROOT / "models", target_is_directory=True)
    shutil.copy(ROOT / "systemd" / "taxonomy.example.yaml", tmp_path / "taxonomy.yaml")
    if example.kind == "gateway-config":
        from agent.gateway.config import load_gateway_config

        (tmp_path / "gateway.yaml").write_text(example.text, encoding="utf-8")
        load_gateway_config(tmp_path / "gateway.yaml", env={})
        return
    if example.kind == "taxonomy":
        (tmp_path / "taxonomy.yaml").write_text(example.text, encoding="utf-8")
        config = tmp_path / "agent.yaml"
        config.write_text("taxonomy: taxonomy.yaml\n", encoding="utf-8")
    else:
        config = tmp_path / "agent.yaml"
        config.write_text(example.text, encoding="utf-8")
    assert ": ok" in _config_check(config, monkeypatch, capsys)


def test_the_checks_catch_what_they_are_for(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # the link check sees a missing page and a missing anchor, and not a link inside code
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## A section: `with` code\n", encoding="utf-8")
    page.write_text("[ok](other.md#a-section-with-code) [gone](missing.md) [bad](other.md#nope)\n"
                    "`[in code](nowhere.md)`\n\n```\n[fenced](nowhere.md)\n```\n", encoding="utf-8")
    problems = broken_links(page, root=tmp_path)
    assert len(problems) == 2, problems
    assert "no such file missing.md" in problems[0] and "no heading with anchor #nope" in problems[1]
    # a path named in code that is not in the repository
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "here.py").write_text("", encoding="utf-8")
    page.write_text("`agent/here.py` and `python agent/gone.py --x`\n\n    bash scripts/nothing\n", encoding="utf-8")
    assert missing_paths(page, root=tmp_path) == ["page.md:1: agent/gone.py does not exist",
                                                  "page.md:3: scripts/nothing does not exist"]
    # the config check refuses what `edge-agent config check` refuses
    bad = tmp_path / "agent.yaml"
    bad.write_text("mqtt:\n  urll: mqtt://x\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"mqtt\.urll \(line 2\): unknown key"):
        _config_check(bad, monkeypatch, capsys)
