"""The repository's top level is fixed (DESIGN.md "Repository layout"): a new folder there is a design change,
made here on purpose, not by accident."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# DESIGN.md's list, plus docs/ (the reference pages) and deploy/ (container files, Kubernetes manifests and the
# broker bridge of a fleet: docs/fleet.md)
TOP_LEVEL = {"pyproject.toml", "agent", "proto", "models", "scripts", "systemd", "tests", "README.md", "LICENSE",
             "docs", "deploy", ".gitignore", ".github", ".ci"}


def test_the_top_level_is_the_agreed_one() -> None:
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"not a git checkout: {result.stderr.strip()}")
    top = {line.split("/")[0] for line in result.stdout.splitlines()}
    assert top - TOP_LEVEL == set(), "a new top-level entry: add it to DESIGN.md's layout and to TOP_LEVEL here"
