"""scripts/setup-env runs pip only when what the install depends on changed (pyproject.toml, the locks,
the script), so `bash scripts/test` and `bash scripts/demo` start at once the second time.

The script runs in a copy of the repository's set-up files whose `.venv/bin/python` is a stand-in that
records the pip commands it is given (nothing is installed anywhere)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = ["pyproject.toml", "scripts/setup-env", "scripts/constraints.txt", "scripts/constraints-gateway.txt",
         "scripts/constraints-dev.txt", "scripts/build-system.in"]
FAKE_PYTHON = """#!/bin/sh
here=$(dirname "$0")
if [ "$1" = "-VV" ]; then echo "Python 3.11.7 (stand-in)"; exit 0; fi
echo "PYTHONWARNINGS=${PYTHONWARNINGS:-} $*" >> "$here/../pip.log"
case "$*" in *" -e ."*) printf '#!/bin/sh\\n' > "$here/edge-agent"; chmod +x "$here/edge-agent";; esac
exit 0
"""


@pytest.fixture
def checkout(tmp_path: pathlib.Path) -> pathlib.Path:
    peers = ("mosquitto", "mosquitto_sub", "systemd-analyze", "dpkg")
    if not all(shutil.which(p) or pathlib.Path(f"/usr/sbin/{p}").exists() for p in peers):
        pytest.skip("the Debian packages setup-env checks for are not installed (bash scripts/setup-env dev)")
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def setup_env(checkout: pathlib.Path, extras: str = "dev") -> list[str]:
    """Run the script; the pip commands it gave."""
    log = checkout / ".venv" / "pip.log"
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"} | {"EDGE_AGENT_RTSP_TESTS": "0"}
    proc = subprocess.run(["bash", "scripts/setup-env", extras], cwd=checkout, capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return log.read_text().splitlines() if log.exists() else []


def test_pip_runs_again_only_when_what_it_installs_from_changed(checkout: pathlib.Path) -> None:
    first = setup_env(checkout)
    assert any("--require-hashes --no-deps -r scripts/constraints-dev.txt" in c for c in first), first
    editable = [c for c in first if c.endswith(" -e .")]
    # setuptools' "Editable installation" note (11 lines on every install) is not shown
    assert editable and editable[0].startswith("PYTHONWARNINGS=ignore:Editable installation "), editable
    assert setup_env(checkout) == []  # nothing changed: no pip at all
    assert any("constraints.txt" in c for c in setup_env(checkout, ""))  # other extras: their own stamp
    assert setup_env(checkout) == [] and setup_env(checkout, "") == []
    # a gateway host: the ollama extra, hash-locked in its own file
    assert any("--require-hashes --no-deps -r scripts/constraints-gateway.txt" in c
               for c in setup_env(checkout, "ollama"))
    with (checkout / "pyproject.toml").open("a") as fh:
        fh.write("\n# a dependency changed\n")
    assert any("--require-hashes" in c for c in setup_env(checkout))
    (checkout / "scripts" / "constraints-dev.txt").write_text("# relocked\n")
    assert any("--require-hashes" in c for c in setup_env(checkout))
    assert setup_env(checkout) == []
