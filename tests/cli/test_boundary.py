"""The command line's one error boundary (agent/cli/boundary.py): an EdgeAgentError raised by any command, at
any depth of the command tree, is one message on stderr and exit 2; no command prints its own copy."""

from __future__ import annotations

import pathlib

import pytest
import typer
from typer.testing import CliRunner

from agent.cli.boundary import RootGroup
from agent.cli.main import app
from agent.errors import ConfigError, EdgeAgentError

CLI = pathlib.Path(__file__).resolve().parents[2] / "agent" / "cli"


def _tree() -> typer.Typer:
    root = typer.Typer(cls=RootGroup, add_completion=False, pretty_exceptions_enable=False)
    sub = typer.Typer()
    root.add_typer(sub, name="sub")

    @root.command("top")
    def top() -> None:
        raise ConfigError(["cameras[0].url: expected a URL"], "edge.yaml")

    @sub.command("deep")
    def deep() -> None:
        raise EdgeAgentError("broker mqtt://user:hunter2@plant:1883 refused the connection")

    @sub.command("fine")
    def fine() -> None:
        typer.echo("ok")

    return root


@pytest.mark.parametrize(("args", "words"), [
    (["top"], "edge-agent: error: edge.yaml: 1 problem(s)\n  - cameras[0].url: expected a URL"),  # a root command
    (["sub", "deep"], "refused the connection"),  # a command of a sub-group: the root's boundary catches it
])
def test_an_error_anywhere_is_one_message_and_exit_2(args: list[str], words: str) -> None:
    result = CliRunner().invoke(_tree(), args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert words in result.stderr and result.stdout == ""


def test_the_message_hides_credentials() -> None:
    result = CliRunner().invoke(_tree(), ["sub", "deep"])
    assert "hunter2" not in result.stderr and "mqtt://***:***@plant:1883" in result.stderr


def test_a_command_that_succeeds_is_untouched() -> None:
    result = CliRunner().invoke(_tree(), ["sub", "fine"])
    assert result.exit_code == 0 and result.stdout == "ok\n"


def test_real_commands_reach_it_from_their_sub_groups(tmp_path: pathlib.Path) -> None:
    # models info (models group) and outbox show (outbox group) on files that are not there
    for args in (["models", "info", str(tmp_path / "none.onnx")], ["outbox", "show", "--file", str(tmp_path / "x")]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("edge-agent: error: ") and str(tmp_path) in result.stderr


def test_no_command_keeps_a_copy_of_the_boundary() -> None:
    # the copies this replaced: `except EdgeAgentError as exc: raise _fail(exc)` in each command
    copies = [p.name for p in CLI.glob("*.py") if "_fail(" in p.read_text(encoding="utf-8")]
    assert copies == []
