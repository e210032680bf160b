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


def check_task(task: str | None, data: list[pathlib.Path], base: pathlib.Path | None) -> pathlib.Path | None:
    """``--task``: None for anomaly; else the base model's task (detect / classify), which needs --base (returned)
    and one --data."""
    if task == "anomaly":
        return None
    if task is not None and task not in ("detect", "classify"):
        raise EdgeAgentError(f"--task {task!r}: expected anomaly (detect and classify come from --base)")
    if base is None:
        raise EdgeAgentError("--base is needed: the model to fine-tune (or --task anomaly to train on good frames)")
    if len(data) != 1:
        raise EdgeAgentError(f"--data given {len(data)} times; a detector or classifier trains on one dataset")
    return base


def run_anomaly_command(data: list[pathlib.Path], out: pathlib.Path | None, imgsz: str | None, steps: int,
                        time_h: float | None, batch: int, threads: int, seed: int, frr: float,
                        defects: pathlib.Path | None, quantize: bool, overwrite: bool, command: str,
                        base: pathlib.Path | None) -> int:
    """``models train --task anomaly``: the options checked, then agent.tooling.training.anomaly.run."""
    from agent.tooling.training.anomaly.run import AnomalyTrainOptions, run_anomaly_training
    from agent.tooling.training.newclasses import check_time

    if base is not None:
        raise EdgeAgentError(f"--base {base}: an anomaly model is trained from scratch on the good frames; leave "
                             "--base out with --task anomaly")
    if not data:
        raise EdgeAgentError("--data: give at least one folder of good images (or a recorder's folder)")
    size = parse_imgsz(imgsz)
    if size is not None and len(size) == 1:
        size = (size[0], size[0])
    check_time(time_h)
    name = f"{data[0].absolute().name}-anomaly"
    opts = AnomalyTrainOptions(
        data=tuple(data), out=out or pathlib.Path("candidates") / f"{name}-{default_out(data[0]).name[-15:]}",
        name=name, imgsz=(size[0], size[1]) if size else None, steps=steps,
        time_s=time_h * 3600 if time_h else None, batch=batch, threads=threads, seed=seed, frr=frr,
        defects=defects, quantize=quantize, overwrite=overwrite, command=command)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = run_anomaly_training(opts, _say)
    except KeyboardInterrupt:
        typer.echo(f"edge-agent: interrupted; nothing written to {opts.out}", err=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo(str(opts.out))
    return code
