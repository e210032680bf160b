"""``edge-agent models train``: argument parsing and output; the work is ``agent.tooling.training.candidate``."""

from __future__ import annotations

import datetime
import pathlib
import re
import signal
from types import FrameType

import typer

from agent.errors import EdgeAgentError
from agent.tooling.training.base import model_name
from agent.tooling.training.progress import EpochRow


def parse_imgsz(text: str | None) -> tuple[int, ...] | None:
    """``320`` -> (320,); ``192x256`` or ``192,256`` -> (192, 256) (height, width)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", text)
    if not match:
        raise EdgeAgentError(f"--imgsz {text!r}: expected one size (320) or height x width (192x256)")
    sizes = tuple(int(g) for g in match.groups() if g is not None)
    if any(s < 32 or s % 32 for s in sizes):
        raise EdgeAgentError(f"--imgsz {text!r}: sizes must be multiples of 32, at least 32")
    return sizes


def default_out(base: pathlib.Path) -> pathlib.Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("candidates") / f"{model_name(base)}-{stamp}"


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _epoch(row: EpochRow) -> None:
    typer.echo(row.line(), err=True)


def run_train_command(data: pathlib.Path, base: pathlib.Path, out: pathlib.Path | None, epochs: int,
                      imgsz: str | None, lr0: float | None, batch: int, threads: int, seed: int, quantize: bool,
                      overwrite: bool, verbose: bool, command: str, export_epoch: str = "best", *,
                      new_classes: bool = False, time_h: float | None = None,
                      taxonomy: pathlib.Path | None = None) -> int:
    from agent.tooling.training.candidate import TrainOptions, run_training

    opts = TrainOptions(data=data, base=base, out=out or default_out(base), epochs=epochs, imgsz=parse_imgsz(imgsz),
                        lr0=lr0, batch=batch, threads=threads, seed=seed, quantize=quantize, overwrite=overwrite,
                        verbose=verbose, command=command, export_epoch=export_epoch, new_classes=new_classes,
                        time_h=time_h, taxonomy=taxonomy)
    # SIGTERM (kill, systemd stop, a timeout) ends the run as Ctrl-C does: the work folder beside --out is
    # removed on the way out (the default action killed the process with it left behind, hidden)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = run_training(opts, _say, _epoch)
    except KeyboardInterrupt:
        typer.echo(f"edge-agent: interrupted; nothing written to {opts.out}", err=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo(str(opts.out))
    return code


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt
