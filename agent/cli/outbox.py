"""``edge-agent outbox``: what is pending and dead-lettered in the outbox, export, requeue, purge.

Works on the outbox file the config names (``outbox.path``, default under $STATE_DIRECTORY), or on
``--file``; the agent may be running (SQLite locks; it notices the change).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from agent.errors import EdgeAgentError

if TYPE_CHECKING:
    from agent.publish.outbox import Outbox

outbox_app = typer.Typer(no_args_is_help=True, help="See what is pending and dead-lettered in the outbox; export, "
                         "requeue (after the broker was fixed) or purge dead letters.")

ConfigOpt = Annotated[pathlib.Path | None, typer.Option(
    "--config", "-c", help="YAML config file (default: $EDGE_AGENT_CONFIG, else built-in defaults)")]
FileOpt = Annotated[pathlib.Path | None, typer.Option(
    "--file", help="the outbox file itself (default: outbox.path of the config)")]
CauseOpt = Annotated[str | None, typer.Option(
    "--cause", help="only dead letters with this cause (e.g. too_large, 'refused 0x87'); default: all")]


def _path(config: pathlib.Path | None, file: pathlib.Path | None) -> pathlib.Path:
    from agent.config.loader import load_config
    from agent.errors import OutboxError

    if file is not None:
        if not file.is_file():
            raise OutboxError(f"--file {file}: no such outbox file; expected the agent's outbox.sqlite")
        return file
    env = os.environ.get("EDGE_AGENT_CONFIG")
    cfg = load_config(config or (pathlib.Path(env) if env else None))
    path = cfg.outbox.path or pathlib.Path("outbox.sqlite")
    if not path.is_file():
        raise OutboxError(f"outbox {path} does not exist (outbox.path of the config); has the agent run on this "
                          "box? Give the file with --file")
    return path


@contextlib.contextmanager
def _opened(config: pathlib.Path | None, file: pathlib.Path | None) -> Iterator[Outbox]:
    """The outbox of the config (or --file), closed afterwards (our errors reach the CLI's error boundary)."""
    from agent.publish.outbox import Outbox

    outbox = Outbox(_path(config, file))
    try:
        yield outbox
    finally:
        outbox.close()


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    age = time.time() - t
    return f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(t))} ({age / 3600:.1f} h ago)"


@outbox_app.command("show")
def show(config: ConfigOpt = None, file: FileOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Pending messages (count, bytes, oldest) and dead letters per cause (count, oldest, sizes, why)."""
    from agent.publish import deadletters

    with _opened(config, file) as outbox:
        s = deadletters.summary(outbox)
    if as_json:
        typer.echo(json.dumps(s.as_dict(), indent=2))
        return
    typer.echo(f"outbox {outbox.path}")
    typer.echo(f"pending: {s.pending} message(s), {s.pending_bytes} bytes, largest {s.pending_largest} bytes, "
               f"oldest {_when(s.pending_oldest)}")
    if not s.dead:
        typer.echo("dead letters: none")
    for c in s.dead:
        typer.echo(f"dead letters [{c.cause}]: {c.count} message(s), {c.total_bytes} bytes, largest {c.largest} "
                   f"bytes, oldest {_when(c.oldest)}, latest dead {_when(c.newest_dead)}\n  why: {c.detail}")


@outbox_app.command("export")
def export(config: ConfigOpt = None, file: FileOpt = None, cause: CauseOpt = None,
           out: Annotated[pathlib.Path | None, typer.Option(
               "--out", "-o", help="write JSON Lines here (default: stdout)")] = None) -> None:
    """Dead letters as JSON Lines, oldest first (a JSON payload parsed, a snapshot base64-encoded)."""
    from agent.publish import deadletters

    n = 0
    with _opened(config, file) as outbox:
        try:
            stream = out.open("w", encoding="utf-8") if out is not None else sys.stdout
            try:
                for doc in deadletters.export(outbox, cause):
                    stream.write(json.dumps(doc, separators=(",", ":")) + "\n")
                    n += 1
            finally:
                if out is not None:
                    stream.close()
        except OSError as exc:
            raise EdgeAgentError(f"--out {out}: cannot write ({exc.strerror})") from exc
    typer.echo(f"exported {n} dead letter(s)", err=True)


@outbox_app.command("requeue")
def requeue(config: ConfigOpt = None, file: FileOpt = None, cause: CauseOpt = None) -> None:
    """Send dead letters again (after the broker's limit or ACL was fixed): back to the end of the queue."""
    from agent.publish import deadletters

    with _opened(config, file) as outbox:
        n = deadletters.requeue(outbox, cause)
    typer.echo(f"requeued {n} dead letter(s); the agent sends them after what is pending now")


@outbox_app.command("purge")
def purge(config: ConfigOpt = None, file: FileOpt = None, cause: CauseOpt = None,
          yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False) -> None:
    """Delete dead letters for good (export them first if they matter)."""
    from agent.publish import deadletters

    with _opened(config, file) as outbox:
        n = deadletters.count(outbox, cause)
        what = f"{n} dead letter(s)" + (f" with cause {cause!r}" if cause else "")
        if n == 0:
            typer.echo(f"nothing to purge: {what}")
            return
        if not yes and not typer.confirm(f"delete {what} from {outbox.path} for good?"):
            typer.echo("nothing deleted")
            raise typer.Exit(1)
        deleted = deadletters.purge(outbox, cause)
    typer.echo(f"deleted {deleted} dead letter(s)")
