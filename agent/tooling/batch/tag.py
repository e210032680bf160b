"""``edge-agent tag PATH... --out FILE``: the daemon's cascade over image files, folders and videos.

Everything that can be wrong with the command line (a missing PATH, an output of another format) is
refused before the model is loaded or anything is written. SIGINT (and SIGTERM) stop the run after the
current item: the output keeps every item tagged so far, the summary so far is printed, exit code 130; a
rerun goes on from there. Files that cannot be read or decoded are skipped, listed, and make the exit code 3
(every other item is in the output), so a script can tell a complete run (0) from one with holes. With
``escalation.gateway`` in the config, uncertain items are sent to the gateway, up to
``escalation.max_in_flight`` calls at once, while the prefilter goes on with the next items; the records
are still written in item order (:mod:`agent.tooling.batch.runner`, :mod:`agent.tooling.batch.escalate`).
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

from agent.config.models import AgentConfig
from agent.errors import BatchError, DatasetError
from agent.runtime.inspector import FrameInspector
from agent.tooling.batch.escalate import GatewayEscalation
from agent.tooling.batch.evaluate import ask_every_image, join, strategies
from agent.tooling.batch.items import BadInput, OutputFormat, Summary, format_for
from agent.tooling.batch.output import OutputFile, read_records, work_path
from agent.tooling.batch.runner import batch_inspector, run_batch
from agent.tooling.batch.sources import Plan, check_paths, walk
from agent.tooling.evaluation.cascade_report import CascadeEvalContext, table_lines, write_cascade_report
from agent.tooling.evaluation.truth import GroundTruth, defect_classes, read_ground_truth

EXIT_INTERRUPTED = 130
EXIT_SKIPPED = 3
"""some inputs could not be read or decoded and are not in the output (the rest is)"""


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
    labels: pathlib.Path | None = None  # ground truth: evaluate the finished output (agent.tooling.evaluation.truth)
    report: pathlib.Path | None = None  # the evaluation's folder (default: beside --out, <stem>-eval/)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_text(done: int, total: int, tagged: int, seconds: float, *, bar: int = 0) -> str:
    """``tag: 12/40 items, 30%, 8.1 items/s, ETA 0:03``, with a ``[#####-----]`` bar of ``bar`` cells when
    ``bar`` > 0. The rate counts the items tagged by this run (not those already in the output)."""
    total = max(total, done)
    share = done / total if total else 1.0
    rate = tagged / max(seconds, 1e-9)
    eta = f"ETA {_duration((total - done) / rate)}" if rate > 0 and done < total else (
        "ETA -" if done < total else f"in {_duration(seconds)}")
    cells = f" [{'#' * int(share * bar):-<{bar}}]" if bar > 0 else ""
    return f"tag: {done}/{total} items{cells}, {share:.0%}, {rate:.1f} items/s, {eta}"


class _ProgressLine:
    """A progress bar on stderr, ``tag: 12/40 items [#######----] 30%, 8.1 items/s, ETA 0:03``, redrawn in
    place on a terminal; without one, the same without the bar as a plain line a second."""

    BAR = 24

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last = 0.0
        self._width = 0

    def __call__(self, summary: Summary, final: bool) -> None:
        now = time.monotonic()
        if not final and now - self._last < (0.2 if self._tty else 1.0):
            return
        self._last = now
        done = len(summary.resumed) + len(summary.tagged)
        text = progress_text(done, summary.planned, len(summary.tagged), summary.seconds,
                             bar=self.BAR if self._tty else 0)
        if self._tty:
            padding = " " * max(0, self._width - len(text))  # a shorter line must cover the longer one
            self._width = len(text)
            self._stream.write("\r" + text + padding + ("\n" if final else ""))
        else:
            self._stream.write(text + "\n")
        self._stream.flush()


def run_tag(options: TagOptions, stream: TextIO = sys.stderr) -> int:
    """Run the command; the exit code (0; 3 when inputs were skipped; 130 when interrupted). BatchError and
    other EdgeAgentErrors for bad input, raised before anything is written."""
    from agent.runtime.building import load_model

    fmt, config = _checked(options)
    output = OutputFile.open(options.out, fmt, options.redo)
    plan = walk(options.paths, options.video_step, exclude=(options.out, work_path(options.out)))

    stop = threading.Event()
    summary = Summary()
    summary_printed = False
    ground_truth: tuple[GroundTruth, bool] | None = None

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        model, _facts, _digest = load_model(config)
        info = getattr(model, "info", None)
        model_classes: tuple[str, ...] = tuple(info.names) if info is not None else ()
        if options.labels is not None:  # wrong labels are refused before anything is written
            ground_truth = read_ground_truth(options.labels, model_classes)
        inspector = batch_inspector(config, model)
        escalation = GatewayEscalation(config.escalation) if config.escalation.gateway is not None else None

        def on_bad(bad: BadInput) -> None:
            stream.write(f"edge-agent: skipped {bad.path}: {bad.kind} ({bad.reason})\n")

        output.start()
        try:
            run_batch(plan, inspector, output, summary, video_step=options.video_step, stop=stop,
                      progress=_ProgressLine(stream), on_bad=on_bad,
                      escalate=escalation.submit if escalation is not None else None,
                      max_in_flight=config.escalation.max_in_flight,
                      throttle_s=options.throttle_s)
            if summary.interrupted:
                output.close()
            else:
                output.finish()
            if ground_truth is not None and not summary.interrupted:
                for line in summary.lines():
                    stream.write(line + "\n")
                summary_printed = True
                _evaluate(options, fmt, ground_truth, model_classes, str(info.model_id) if info else "?", config,
                          plan, inspector, escalation, stop, stream)
        except BaseException:
            output.close()  # what was written stays, to resume
            raise
        finally:
            if escalation is not None:
                escalation.close()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if not summary_printed:
        for line in summary.lines():
            stream.write(line + "\n")
    return _exit_code(options, summary, ground_truth is not None, stream)


def _checked(options: TagOptions) -> tuple[OutputFormat, AgentConfig]:
    """The output format and the config (``--model`` applied, logging configured); BatchError or ConfigError for
    bad options, before anything is opened."""
    from agent import logs
    from agent.config.loader import load_config

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
    return fmt, config


def _exit_code(options: TagOptions, summary: Summary, evaluating: bool, stream: TextIO) -> int:
    """0; 3 when inputs were skipped; 130 when interrupted (each said on ``stream``)."""
    if summary.interrupted:
        stream.write(f"edge-agent: interrupted; run the same command again to tag the rest into {options.out}\n")
        if evaluating:
            stream.write("edge-agent: the evaluation against --labels runs when every item is tagged\n")
        return EXIT_INTERRUPTED
    if summary.bad:
        stream.write(f"edge-agent: {len(summary.bad)} input(s) skipped (listed above); exit code {EXIT_SKIPPED}\n")
        return EXIT_SKIPPED
    return 0


def report_folder(options: TagOptions) -> pathlib.Path:
    return options.report or options.out.with_name(options.out.stem + "-eval")


def _evaluate(options: TagOptions, fmt: OutputFormat, ground_truth: tuple[GroundTruth, bool],
              model_classes: tuple[str, ...], model_id: str, config: AgentConfig, plan: Plan,
              inspector: FrameInspector, escalation: GatewayEscalation | None, stop: threading.Event,
              stream: TextIO) -> None:
    """Score the finished output against the labels; write the report and print the table."""
    truth, strip_suffix = ground_truth
    classes = defect_classes(model_classes)
    joined = join(read_records(options.out, fmt), truth, strip_suffix)
    if not joined.records:
        raise DatasetError(f"--labels {options.labels}: none of the {len(joined.unlabelled)} items has a label "
                           "there; YOLO labels are matched by the end of the image's path without its suffix "
                           "(images/val/a.jpg -> labels/val/a.txt), CSV rows by the end of the path")
    vlm = None
    if escalation is not None:
        stream.write(f"evaluation: asking the VLM about every one of {len(joined.records)} labelled images\n")
        stream.flush()
        vlm = ask_every_image(joined, plan, inspector, escalation, frozenset(classes), stop)
    results = strategies(joined, classes, vlm)
    ctx = CascadeEvalContext(model_id=model_id, labels=options.labels or pathlib.Path(), output=options.out,
                             accept=config.triage.accept, reject=config.triage.reject,
                             gateway=config.escalation.gateway, items=len(joined.records) + len(joined.unlabelled),
                             unlabelled=len(joined.unlabelled), classes=classes)
    files = write_cascade_report(report_folder(options), results, ctx)
    stream.write(f"evaluation against {options.labels}: {len(joined.records)} labelled images"
                 + (f", {len(joined.unlabelled)} items without a label left out" if joined.unlabelled else "")
                 + "\n")
    for line in table_lines(results):
        stream.write(line + "\n")
    stream.write(f"report: {files.html} ({files.json.name}, {files.chart.name})\n")
