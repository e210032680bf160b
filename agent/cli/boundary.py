"""The command line's one error boundary.

Every :class:`~agent.errors.EdgeAgentError` that a command raises, at any depth of the command tree,
becomes one message on stderr (``edge-agent: error: ...``, credentials in URLs redacted) and exit
code 2; commands raise and never print their own errors. A traceback means a bug in edge-agent,
never bad input.
"""

from __future__ import annotations

from typing import Any

import typer
from typer import _click as click

from agent.cli.help import TidyGroup
from agent.errors import EdgeAgentError
from agent.redact import redact

__all__ = ["EXIT_ERROR", "RootGroup", "error_exit"]

EXIT_ERROR = 2  # bad input or a start-up problem; 1 is a refusal (gate, comparison), 3 a partial result


def error_exit(exc: EdgeAgentError) -> typer.Exit:
    """Say ``exc`` on stderr; the exit to raise."""
    typer.echo(f"edge-agent: error: {redact(str(exc))}", err=True)  # a message may quote a URL with credentials
    return typer.Exit(EXIT_ERROR)


class RootGroup(TidyGroup):
    """The root command group: tidy help (:class:`TidyGroup`) and the error boundary around every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgeAgentError as exc:
            raise error_exit(exc) from None
