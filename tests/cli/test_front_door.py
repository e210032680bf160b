"""What a new user meets first: plausible mistakes on the command line answered with a message (exit 2,
no traceback, no broker started for nothing), the demo against a broker that is not there, and help
text in words (whole summaries, no Python type names)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import time

import pytest
import typer
from typer import _click as click

from agent.cli.main import app
from tests.cli.test_cli import EDGE_AGENT, assert_no_traceback, edge_agent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # a broker URL with one slash: the demo's --broker is checked like mqtt.url
        (["demo", "--broker", "mqtts:/host"], "--broker mqtts:/host: 'mqtts:/host' is not a broker URL"),
        # a frame rate of 0, refused before a private broker starts
        (["demo", "--fps", "0"], "--fps 0: Input should be greater than 0"),
        # more frames per second than a camera gives
        (["demo", "--fps", "1e9"], "--fps 1e+09: Input should be less than or equal to 240"),
        # a negative seed (the synthetic source takes 0 or more)
        (["demo", "--seed", "-1"], "--seed"),
        # a model path that does not exist, refused before the broker starts
        (["demo", "--model", "/nonexistent/model.onnx"], "--model /nonexistent/model.onnx: no such file"),
        # a negative duration (0 is "until Ctrl-C"; a negative one meant the same, silently)
        (["demo", "--duration", "-5"], "--duration -5: expected 0 (until Ctrl-C) or a positive number"),
        # tail: no events to wait for, or a deadline already past
        (["tail", "--count", "0"], "--count 0: expected a positive number"),
        (["tail", "--timeout", "-1"], "--timeout -1: expected a positive number"),
        # a log level logging does not know
        (["run", "--log-level", "verbose"], "--log-level 'verbose': expected one of debug, info, warning, error"),
    ],
)
def test_plausible_mistakes_get_a_message_before_anything_starts(args: list[str], message: str) -> None:
    proc = edge_agent(*args)
    assert_no_traceback(proc)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "private Mosquitto" not in proc.stdout  # nothing was started for a command that cannot run


def test_demo_against_an_unreachable_broker_keeps_to_its_duration_and_tells_the_truth() -> None:
    started = time.monotonic()
    proc = edge_agent("demo", "--broker", "mqtt://127.0.0.1:1", "--duration", "3", "--quiet", timeout=120)
    elapsed = time.monotonic() - started
    assert_no_traceback(proc)
    assert proc.returncode == 1, proc.stderr  # not everything was delivered
    summary = re.search(r"== summary: (\d+) frames inspected in ([\d.]+) s", proc.stdout)
    assert summary is not None, proc.stdout
    # --duration 3 counts the wait for the broker: about 3 s of inspection (it was 14 s: a 10 s wait first);
    # the bound leaves room for a loaded CI box
    assert float(summary.group(2)) < 9.0, proc.stdout
    pending = re.search(r"still pending (\d+)", proc.stdout)
    assert pending is not None and int(pending.group(1)) > 0
    assert (f"mqtt: {pending.group(1)} event(s) NOT delivered: mqtt://127.0.0.1:1 was not reachable"
            in proc.stdout)
    assert "the demo's outbox is temporary and is discarded with them" in proc.stdout
    assert "sent after the next start" not in proc.stdout + proc.stderr
    # start-up (imports, model load) and the bounded shutdown wait come on top of the 3 s; generous for CI
    assert elapsed < 60, elapsed


def test_version() -> None:
    proc = edge_agent("--version")
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"edge-agent \d+\.\d+\.\d+\S*\n", proc.stdout)


def _commands() -> list[tuple[str, click.Command]]:
    """Every command and group under ``edge-agent``, by its command line."""
    found: list[tuple[str, click.Command]] = []

    def walk(prefix: str, command: click.Command) -> None:
        found.append((prefix, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(f"{prefix} {name}", sub)

    walk("edge-agent", typer.main.get_command(app))
    return found


@pytest.mark.parametrize(("line", "command"), _commands(), ids=[line for line, _ in _commands()])
def test_help_has_whole_summaries_and_no_python_type_names(line: str, command: click.Command) -> None:
    # the summary in the list of commands is a whole sentence, not cut at 45 characters
    short = command.get_short_help_str(limit=45)
    assert short.endswith("."), (line, short)
    assert not short.endswith("..."), (line, short)
    usage = " ".join(piece for piece in command.collect_usage_pieces(click.Context(command)))
    assert "{" not in usage, (line, usage)  # no {paths}
    ctx = click.Context(command, info_name=line)
    for param in command.get_params(ctx):
        shown = param.get_help_record(ctx)
        text = " ".join(shown) if shown else ""
        assert not re.search(r"<(bool|str|int|float|path)\b|list\[", text), (line, text)
    if line == "edge-agent models":  # the group does more than inspect and evaluate
        assert "promote" in short and "quantize" in short


def test_config_check_reports_every_problem_in_one_pass_and_opens_the_model(tmp_path: pathlib.Path) -> None:
    (tmp_path / "model.onnx").write_text("not a model\n")  # a text file where the model should be
    config = tmp_path / "agent.yaml"
    config.write_text("mqtt:\n  url: mqtt://b:1883\n  urll: mqtt://c\n  username: u\n"
                      "  password_credential: mqtt-pw\nmodel:\n  path: model.onnx\n")
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    proc = subprocess.run([*EDGE_AGENT, "config", "check", str(config)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert_no_traceback(proc)
    assert proc.returncode == 1
    assert f"{config}: 3 problem(s)" in proc.stderr
    assert "mqtt.urll (line 3): unknown key" in proc.stderr  # the typo
    assert "mqtt.password_credential: 'mqtt-pw' names a systemd credential" in proc.stderr  # in the same pass
    assert f"model.path: model file {tmp_path / 'model.onnx'} could not be loaded by onnxruntime" in proc.stderr
    # the typo fixed: the model is still refused, as `edge-agent doctor` refuses it
    config.write_text("model:\n  path: model.onnx\n")
    proc = edge_agent("config", "check", str(config))
    assert proc.returncode == 1 and f"{config}: 1 problem(s)" in proc.stderr, proc.stderr


def test_the_command_reference_names_every_command() -> None:
    readme = (pathlib.Path(__file__).parents[2] / "docs" / "commands.md").read_text(encoding="utf-8")
    rows = set()
    for row in readme.splitlines():
        if row.startswith("| `edge-agent "):
            words = row.split("`")[1].replace("\\|", "|").split()
            for end in range(2, len(words) + 1):  # `edge-agent outbox show|export ...` names four commands
                rows |= {" ".join([*words[:end - 1], name]) for name in words[end - 1].split("|")}
    for line, command in _commands():
        if line != "edge-agent" and not getattr(command, "commands", None):  # groups: their commands are the rows
            assert line in rows, f"docs/commands.md's command table has no row for `{line}`"


def test_the_config_reference_and_the_example_config_agree_on_the_intra_op_threads_default() -> None:
    root = pathlib.Path(__file__).parents[2]
    readme = (root / "docs" / "configuration.md").read_text(encoding="utf-8")
    example = (root / "systemd" / "edge-agent.yaml").read_text(encoding="utf-8")
    default = "default: cores / concurrent_runs (1 on a 2-core box)"
    assert default in readme and default in example
