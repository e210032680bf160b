"""The hash-pinned locks that scripts/setup-env installs (scripts/constraints*.txt) cover pyproject.toml:
every runtime and dev requirement has a pin that satisfies it, with hashes, for Python 3.10 to 3.13.
A dependency added or raised without `bash scripts/lock-deps` fails here, with the command to run."""

from __future__ import annotations

import pathlib
import re

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\[\]-]+)==([^ ;\\]+)(?: ; (.+?))?(?: \\)?$")


def _pins(lock: pathlib.Path) -> list[tuple[str, Version, Marker | None, int]]:
    """(name, version, marker, number of hashes) of every pin in ``lock``."""
    pins: list[tuple[str, Version, Marker | None, int]] = []
    for line in lock.read_text().splitlines():
        if m := PIN.match(line):
            pins.append((re.sub(r"[-_.]+", "-", m.group(1)).lower(), Version(m.group(2)),
                         Marker(m.group(3)) if m.group(3) else None, 0))
        elif line.strip().startswith("--hash=sha256:") and pins:
            name, version, marker, hashes = pins[-1]
            pins[-1] = (name, version, marker, hashes + 1)
    return pins


def _requirements(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    if extra:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


@pytest.mark.parametrize(("lock", "extra"), [("constraints.txt", None), ("constraints-gateway.txt", "ollama"),
                                            ("constraints-dev.txt", "dev")])
@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13"])
def test_the_lock_pins_every_requirement_of_pyproject(lock: str, extra: str | None, python: str) -> None:
    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
           "platform_machine": "x86_64", "platform_python_implementation": "CPython", "implementation_name": "cpython"}
    pins = _pins(ROOT / "scripts" / lock)
    assert pins and all(hashes > 0 for *_, hashes in pins), "every pin carries its hashes"
    for req in _requirements(extra):
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        chosen = [v for n, v, marker, _ in pins if n == name and (marker is None or marker.evaluate(env))]
        assert len(chosen) == 1 and chosen[0] in req.specifier, (
            f"scripts/{lock} pins {name} {chosen or 'nowhere'} for Python {python}, pyproject.toml asks for "
            f"{req}: run `bash scripts/lock-deps` (docs/development.md) and commit scripts/constraints*.txt")


def test_the_camera_box_lock_leaves_the_gateways_ollama_client_out() -> None:
    # constraints.txt is what a camera box installs; ollama (and its httpx) come only with the ollama extra
    runtime = {name for name, *_ in _pins(ROOT / "scripts" / "constraints.txt")}
    gateway = {name for name, *_ in _pins(ROOT / "scripts" / "constraints-gateway.txt")}
    assert "ollama" not in runtime and "ollama" in gateway
    assert runtime < gateway
