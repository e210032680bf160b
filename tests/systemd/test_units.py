"""The unit files under systemd/: ``systemd-analyze verify`` passes, the ``security --offline=yes``
exposure score stays at or below what was achieved, and the units agree with the example configs.

systemd-analyze works on unit files without a running systemd. ``verify`` checks that the
ExecStart= binary exists, so the tests verify a copy whose ExecStart names this checkout's
``edge-agent`` instead of the install path /opt/edge-agent/bin/edge-agent; nothing else changes.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from agent.config.loader import load_config
from agent.gateway.config import load_gateway_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
INSTALLED = "/opt/edge-agent/bin/edge-agent"

# Achieved exposure scores (systemd 252, `systemd-analyze security --offline=yes`); a change that raises one
# fails here. Both are in the "OK" band. What keeps the agent's above the gateway's (each needed):
# network access, SupplementaryGroups=video render and DeviceAllow= for cameras/GPU (no PrivateDevices=),
# AF_NETLINK, no MemoryDenyWriteExecute= (CUDA JIT, libffi), no PrivateUsers= (the supplementary groups),
# no ProcSubset=pid (/proc/driver/nvidia), @resources allowed (mbind, sched_setaffinity).
EXPOSURE_CEILING = {"edge-agent.service": 1.6, "edge-agent-gateway.service": 1.1}

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (Debian package `systemd`; "
                                          "scripts/setup-env dev installs it)")


def installable_copy(unit: str, folder: pathlib.Path) -> pathlib.Path:
    """The unit with ExecStart= pointing at this checkout's edge-agent (which exists)."""
    executable = pathlib.Path(sys.executable).parent / "edge-agent"
    if not executable.exists():
        pytest.fail(f"{executable} is missing; `pip install -e .` in the virtualenv makes it")
    text = (UNITS / unit).read_text()
    assert INSTALLED in text, f"{unit}: ExecStart= no longer names {INSTALLED}; update this test"
    copy = folder / unit
    copy.write_text(text.replace(INSTALLED, str(executable)))
    return copy


def parse_unit(unit: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value (a key may repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in (UNITS / unit).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key, []).append(value)
    return out


@needs_analyze
@pytest.mark.parametrize("unit", sorted(EXPOSURE_CEILING))
def test_systemd_analyze_verify_passes(unit: str, tmp_path: pathlib.Path) -> None:
    copy = installable_copy(unit, tmp_path)
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert unit not in proc.stderr, proc.stderr  # no warning about our unit either


@needs_analyze
@pytest.mark.parametrize(("unit", "ceiling"), sorted(EXPOSURE_CEILING.items()))
def test_security_exposure_stays_at_or_below_the_recorded_score(unit: str, ceiling: float,
                                                                 tmp_path: pathlib.Path) -> None:
    copy = installable_copy(unit, tmp_path)
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(copy)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+) (\w+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    score, band = float(match.group(1)), match.group(2)
    assert score <= ceiling, f"{unit}: exposure {score} {band} is above the recorded {ceiling}:\n{proc.stdout}"
    assert band == "OK"


@pytest.mark.parametrize("unit", sorted(EXPOSURE_CEILING))
def test_units_are_notify_services_with_a_watchdog_and_a_restart_policy(unit: str) -> None:
    svc = parse_unit(unit)["Service"]
    assert svc["Type"] == ["notify"] and svc["NotifyAccess"] == ["main"]
    assert svc["WatchdogSec"] == ["30"] and svc["Restart"] == ["on-failure"]
    assert svc["DynamicUser"] == ["yes"] and svc["ConfigurationDirectory"] == ["edge-agent"]
    assert "StartLimitBurst" in parse_unit(unit)["Unit"]


@pytest.mark.parametrize(("unit", "memory"), [("edge-agent.service", "4G"), ("edge-agent-gateway.service", "1536M")])
def test_units_bound_file_descriptors_memory_and_threads(unit: str, memory: str) -> None:
    svc = parse_unit(unit)["Service"]
    assert int(svc["LimitNOFILE"][0]) >= 16384  # ~1,000 idle sockets ran out of the default 1024
    assert svc["MemoryMax"] == [memory]
    assert 128 <= int(svc["TasksMax"][0]) <= 4096


def test_the_agent_unit_reaches_cameras_and_gpus_and_has_its_state_and_secret() -> None:
    svc = parse_unit("edge-agent.service")["Service"]
    assert "char-video4linux rw" in svc["DeviceAllow"] and "char-nvidia* rw" in svc["DeviceAllow"]
    assert svc["DevicePolicy"] == ["closed"] and "PrivateDevices" not in svc  # it would hide /dev/video*
    assert "video" in svc["SupplementaryGroups"][0].split()
    assert svc["StateDirectory"] == ["edge-agent"]
    assert "AF_UNIX" in svc["RestrictAddressFamilies"][0]  # sd_notify and journald


def test_example_config_is_valid_and_matches_the_units(tmp_path: pathlib.Path) -> None:
    """`edge-agent config check` passes on systemd/edge-agent.yaml as the unit runs it (with its credential),
    and the names agree: the config file ExecStart= reads, the credential LoadCredential= provides."""
    svc = parse_unit("edge-agent.service")["Service"]
    assert svc["ExecStart"][0].endswith("run --config ${CONFIGURATION_DIRECTORY}/edge-agent.yaml")
    credential, _, source = svc["LoadCredential"][0].partition(":")
    doc = yaml.safe_load((UNITS / "edge-agent.yaml").read_text())
    assert doc["mqtt"]["password_credential"] == credential and source.startswith("/etc/edge-agent/credentials/")
    (tmp_path / credential).write_text("secret\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "STATE_DIRECTORY": str(tmp_path)}
    config = load_config(UNITS / "edge-agent.yaml", env)
    assert config.mqtt.password_file == tmp_path / credential
    assert config.outbox.path == tmp_path / "outbox.sqlite"
    assert config.metrics.listen == "127.0.0.1:9464"

    from typer.testing import CliRunner

    from agent.cli.main import app

    # config check opens the model as the agent would: the shipped one stands in for /opt/edge-agent/models here
    shipped = UNITS.parent / "models" / pathlib.Path(doc["model"]["path"]).name
    env["EDGE_AGENT_MODEL__PATH"] = str(shipped)
    result = CliRunner(env=env).invoke(app, ["config", "check", str(UNITS / "edge-agent.yaml")])
    assert result.exit_code == 0 and result.stdout.strip().endswith("edge-agent.yaml: ok"), result.output


def test_example_gateway_config_is_valid_and_matches_its_unit() -> None:
    svc = parse_unit("edge-agent-gateway.service")["Service"]
    assert svc["ExecStart"][0].endswith("gateway --config ${CONFIGURATION_DIRECTORY}/edge-agent-gateway.yaml")
    config = load_gateway_config(UNITS / "edge-agent-gateway.yaml", env={})
    assert config.listen == "127.0.0.1:50061" and config.metrics.listen == "127.0.0.1:9465"


@pytest.mark.parametrize(("env_file", "prefix"), [("edge-agent.env", "EDGE_AGENT_"),
                                                  ("edge-agent-gateway.env", "EDGE_GATEWAY_")])
def test_env_examples_only_hold_comments_and_assignments(env_file: str, prefix: str) -> None:
    lines = [line for line in (UNITS / env_file).read_text().splitlines() if line.strip()]
    assert all(line.startswith("#") or re.match(r"^[A-Z_][A-Z0-9_]*=", line) for line in lines)
    assert any(line.lstrip("#").startswith(prefix) for line in lines)


def test_the_agent_unit_reloads_the_config_with_sighup() -> None:
    """`systemctl reload edge-agent` sends SIGHUP, which the agent takes as "re-read the config"."""
    svc = parse_unit("edge-agent.service")["Service"]
    assert svc["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
