"""The ``--help`` of every command in words a user reads, not Typer's type names.

Typer (0.2x) shows ``<bool>`` beside every flag, Python type names beside the other options
(``<str>``, ``<int range>``), an argument's Python type (``<list[Path]>``) and its parameter name in
braces (``{paths}``) in the usage line; it keeps a docstring's line breaks after
the first paragraph, and without Rich cuts a command's summary at about 45 characters. :func:`tidy`
walks the click command tree once, when :class:`TidyGroup` (the root group) is built: flags get no
type column, other options click's words for their values (``TEXT``, ``INTEGER``, ``NUMBER``,
``PATH``; a choice keeps its ``<a|b|c>``), arguments a metavar (``PATH...``, ``[PATH]``) as click's
own usage lines have them, and each help text whole paragraphs, the first of them the command's
summary in the list of commands.
"""

from __future__ import annotations

import inspect
from typing import Any

from typer import _click as click
from typer.core import TyperArgument, TyperGroup, TyperOption

# Typer's type label -> the metavar shown instead (click's own words; a range is shown beside it as [x>=0])
_METAVARS = {"<str>": "TEXT", "<int>": "INTEGER", "<int range>": "INTEGER", "<float>": "NUMBER",
             "<float range>": "NUMBER", "<path>": "PATH"}


class _Argument(TyperArgument):
    """An argument shown by its metavar alone (``PATH...``), without the Python type beside it."""

    def display_type_rich(self, ctx: click.Context) -> str | None:
        return None

    def _display(self) -> str:
        name = self.metavar or (self.name or "").upper()
        return name + ("..." if self.nargs != 1 else "")

    def _rich_display_name(self) -> str:
        return self._display()

    def _usage_display_name(self) -> str:
        return self._display() if self.required else f"[{self._display()}]"


def paragraphs(text: str) -> list[str]:
    """The paragraphs of a docstring, each on one line."""
    return [" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n") if p.strip()]


def tidy(command: click.Command) -> None:
    """Flags without ``<bool>``, arguments by metavar, whole paragraphs and a whole summary, in ``command``
    and every subcommand under it."""
    if command.help:
        parts = paragraphs(command.help)
        command.help = "\n\n".join(parts)
        command.short_help = command.short_help or parts[0]
    ctx = click.Context(command)
    help_option = command.get_help_option(ctx)
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = "" if param.is_flag or param.count else _METAVARS.get(param.display_type(ctx))
        elif isinstance(param, TyperArgument) and not isinstance(param, _Argument):
            param.metavar = param.metavar or (param.name or "").upper()
            param.__class__ = _Argument
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)


class TidyGroup(TyperGroup):
    """The root command group: :func:`tidy` over the whole tree once it is built (``typer.Typer(cls=...)``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy(self)
