"""``edge-agent images``: list, export and purge the images kept for audits (docs/images.md).

Works on the images folder the config names (``images.dir``, default ``images/`` under $STATE_DIRECTORY), or on
``--dir``; the agent may be running (the index is SQLite in WAL mode; a purge is seen by the agent at once).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from agent.outputs.images.store import ImageStore, Query

images_app = typer.Typer(no_args_is_help=True, help="List, export or purge the images kept for audits (images:), "
                         "by time, camera, verdict or event id.")

ConfigOpt = Annotated[pathlib.Path | None, typer.Option(
    "--config", "-c", help="YAML config file (default: $EDGE_AGENT_CONFIG, else built-in defaults)")]
DirOpt = Annotated[pathlib.Path | None, typer.Option(
    "--dir", help="the images folder itself (default: images.dir of the config)")]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="captured at or after: 2026-12-05T14:00:00Z, 2026-12-05 (UTC), or an age: 30m, 12h, 7d")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="captured before (same forms as --since)")]
CameraOpt = Annotated[list[str] | None, typer.Option(
    "--camera", metavar="ID", help="only this camera (repeat for several)")]
VerdictOpt = Annotated[list[str] | None, typer.Option(
    "--verdict", metavar="VERDICT", help="only this verdict: pass, defect or uncertain (repeat for several)")]
EventOpt = Annotated[list[str] | None, typer.Option(
    "--event", metavar="ID", help="only this event id (repeat for several)")]


@contextlib.contextmanager
def _selected(config: pathlib.Path | None, folder: pathlib.Path | None, since: str | None, until: str | None,
              cameras: list[str] | None, verdicts: list[str] | None,
              events: list[str] | None) -> Iterator[tuple[ImageStore, Query]]:
    """The store (closed afterwards) and the filter; our errors reach the CLI's error boundary."""
    from agent.config.loader import load_config
    from agent.outputs.images.export import build_query
    from agent.outputs.images.keeper import images_dir
    from agent.outputs.images.store import ImageStore

    known: list[str] = []
    if folder is None:
        env = os.environ.get("EDGE_AGENT_CONFIG")
        cfg = load_config(config or (pathlib.Path(env) if env else None))
        folder, known = images_dir(cfg), [c.id for c in cfg.cameras]
    store = ImageStore.open(folder, create=False, repair=False)
    try:
        yield store, build_query(store, since=since, until=until, cameras=cameras or [], verdicts=verdicts or [],
                                 event_ids=events or [], known_cameras=known)
    finally:
        store.close()


@images_app.command("list")
def list_images(config: ConfigOpt = None, folder: DirOpt = None, since: SinceOpt = None, until: UntilOpt = None,
                camera: CameraOpt = None, verdict: VerdictOpt = None, event: EventOpt = None,
                as_json: Annotated[bool, typer.Option("--json", help="JSON Lines: one image and its event a line")]
                = False) -> None:
    """The kept images, oldest first: capture time, camera, verdict, bytes, event id, file."""
    with _selected(config, folder, since, until, camera, verdict, event) as (store, query):
        n = size = 0
        for row in store.rows(query):
            n, size = n + 1, size + row.bytes
            if as_json:
                typer.echo(json.dumps({"event_id": row.event_id, "camera": row.camera, "captured_at": row.captured_at,
                                       "verdict": row.verdict, "bytes": row.bytes, "file": str(store.root / row.path),
                                       "event": row.payload}, separators=(",", ":")))
            else:
                typer.echo(f"{row.captured_at}  {row.camera:<12} {row.verdict:<9} {row.bytes:>9}  {row.event_id}  "
                           f"{row.path}")
    typer.echo(f"{n} image(s), {size} bytes in {store.root}", err=True)


@images_app.command("export")
def export_images(out: Annotated[pathlib.Path, typer.Option(
                      "--out", "-o", help="a new folder, or a new .tar / .tar.gz file")],
                  config: ConfigOpt = None, folder: DirOpt = None, since: SinceOpt = None, until: UntilOpt = None,
                  camera: CameraOpt = None, verdict: VerdictOpt = None, event: EventOpt = None) -> None:
    """The images and an index of their events (index.jsonl, index.csv) into a new folder or tar."""
    from agent.outputs.images.export import export

    with _selected(config, folder, since, until, camera, verdict, event) as (store, query):
        n = export(store, query, out)
    typer.echo(f"exported {n} image(s) to {out}")


@images_app.command("purge")
def purge_images(config: ConfigOpt = None, folder: DirOpt = None, since: SinceOpt = None, until: UntilOpt = None,
                 camera: CameraOpt = None, verdict: VerdictOpt = None, event: EventOpt = None,
                 yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False) -> None:
    """Delete the images picked by the filters for good (all of them without one; export them first if they
    matter)."""
    with _selected(config, folder, since, until, camera, verdict, event) as (store, query):
        rows = list(store.rows(query))
        what = f"{len(rows)} image(s) ({sum(r.bytes for r in rows)} bytes)"
        if not rows:
            typer.echo("nothing to purge: no image matches")
            return
        if not yes and not typer.confirm(f"delete {what} from {store.root} for good?"):
            typer.echo("nothing deleted")
            raise typer.Exit(1)
        deleted = store.delete(query)
    typer.echo(f"deleted {deleted} image(s)")
