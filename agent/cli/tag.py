"""``edge-agent tag PATH... --out FILE``: the daemon's cascade over image files, folders and videos.

Everything that can be wrong with the command line (a missing PATH, an output of another format) is
refused before the model is loaded or anything is written. SIGINT (and SIGTERM) stop the run after the
current item: the output keeps every item tagged so far, the summary so far is printed, exit code 130; a
rerun goes on from there. With ``escalation.gateway`` in the config, uncertain items are sent to the
gateway one by one (:mod:`agent.batch.escalate`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import sys
import threading
import time
from typing import TextIO

from agent.batch.escalate import GatewayEscalation
from agent.batch.items import BadInput, Summary, format_for
from agent.batch.output import OutputFile, work_path
from agent.batch.runner import batch_inspector, run_batch
from agent.batch.sources import check_paths, walk
from agent.errors import BatchError

EXIT_INTERRUPTED = 130


@dataclasses.dataclass(frozen=True)
class TagOptions:
    paths: tuple[pathlib.Path, ...]
    out: pathlib.Path
    fmt: str | None = None
    config: pathlib.Path | None = None
    model: pathlib.Path | None = None
    video_step: int = 15
    redo: bool = False
    throttle_s: float = 0.0  # hidden: a pause after each item, for tests that interrupt a run


class _ProgressLine:
    """``tag: 12/40 items, 8.1 items/s`` on stderr: redrawn in place on a terminal, a line a second else."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last = 0.0

    def __call__(self, summary: Summary, final: bool) -> None:
        now = time.monotonic()
        if not final and now - self._last < (0.2 if self._tty else 1.0):
            return
        self._last = now
        done = len(summary.resumed) + len(summary.tagged)
        rate = len(summary.tagged) / max(summary.seconds, 1e-9)
        text = f"tag: {done}/{max(summary.planned, done)} items, {rate:.1f} items/s"
        if self._tty:
            self._stream.write("\r" + text + ("\n" if final else ""))
        else:
            self._stream.write(text + "\n")
        self._stream.flush()


def run_tag(options: TagOptions, stream: TextIO = sys.stderr) -> int:
    """Run the command; the exit code (0, or 130 when interrupted). BatchError and other EdgeAgentErrors
    for bad input, raised before anything is written."""
    from agent import logs
    from agent.config.loader import load_config
    from agent.service import load_model

    try:
        fmt = format_for(options.out, options.fmt)
    except ValueError as exc:
        raise BatchError(str(exc)) from None
    if options.video_step < 1:
        raise BatchError(f"--video-step {options.video_step}: expected 1 or more")
    check_paths(options.paths)
    config_path = options.config or (pathlib.Path(os.environ["EDGE_AGENT_CONFIG"])
                                     if os.environ.get("EDGE_AGENT_CONFIG") else None)
    config = load_config(config_path)
    if options.model is not None:
        config = config.model_copy(update={"model": config.model.model_copy(update={"path": options.model})})
    logs.configure(config.logging.level, config.logging.json_format)
    output = OutputFile.open(options.out, fmt, options.redo)
    plan = walk(options.paths, options.video_step, exclude=(options.out, work_path(options.out)))

    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        model, _facts, _digest = load_model(config)
        inspector = batch_inspector(config, model)
        escalation = GatewayEscalation(config.escalation) if config.escalation.gateway is not None else None

        def on_bad(bad: BadInput) -> None:
            stream.write(f"edge-agent: skipped {bad.path}: {bad.kind} ({bad.reason})\n")

        output.start()
        summary = Summary()
        try:
            run_batch(plan, inspector, output, summary, video_step=options.video_step, stop=stop,
                      progress=_ProgressLine(stream), on_bad=on_bad, escalate=escalation,
                      throttle_s=options.throttle_s)
        except BaseException:
            output.close()  # what was written stays, to resume
            raise
        finally:
            if escalation is not None:
                escalation.close()
        if summary.interrupted:
            output.close()
        else:
            output.finish()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    for line in summary.lines():
        stream.write(line + "\n")
    if summary.interrupted:
        stream.write(f"edge-agent: interrupted; run the same command again to tag the rest into {options.out}\n")
        return EXIT_INTERRUPTED
    return 0
