"""The ``edge-agent`` command line.

Every EdgeAgentError becomes a one-paragraph message on stderr and exit code 2;
a traceback means a bug in edge-agent, never bad input.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys
import threading
from typing import Annotated

import typer

from agent.errors import EdgeAgentError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Camera-side inspection agent: prefilter, triage, VLM escalation, MQTT tags.")
config_app = typer.Typer(no_args_is_help=True, help="Check configuration files.")
dataset_app = typer.Typer(no_args_is_help=True, help="Make and export datasets.")
models_app = typer.Typer(no_args_is_help=True, help="Inspect and evaluate prefilter models.")
app.add_typer(config_app, name="config")
app.add_typer(dataset_app, name="dataset")
app.add_typer(models_app, name="models")


def _fail(exc: EdgeAgentError) -> typer.Exit:
    typer.echo(f"edge-agent: error: {exc}", err=True)
    return typer.Exit(2)


def _install_stop_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@app.command()
def run(
    config: Annotated[pathlib.Path | None, typer.Option(
        "--config", "-c", help="YAML config file (default: $EDGE_AGENT_CONFIG, else built-in defaults)")] = None,
    log_level: Annotated[str | None, typer.Option(help="override logging.level")] = None,
) -> None:
    """Run the agent as a daemon until SIGTERM/SIGINT (or until every file source ended)."""
    from agent import logs
    from agent.config.loader import load_config
    from agent.service import AgentService

    path = config or (pathlib.Path(os.environ["EDGE_AGENT_CONFIG"]) if os.environ.get("EDGE_AGENT_CONFIG") else None)
    try:
        cfg = load_config(path)
        logs.configure(log_level or cfg.logging.level, cfg.logging.json_format)
        service = AgentService(cfg)
        stop = threading.Event()
        _install_stop_signals(stop)
        service.start()
    except EdgeAgentError as exc:
        raise _fail(exc) from None
    service.wait(stop)
    summary = service.shutdown(timeout=15.0)
    if service.loop is not None and service.loop.error is not None:
        typer.echo(f"edge-agent: error: inference stopped: {service.loop.error}", err=True)
        raise typer.Exit(1)
    typer.echo(f"inspected {sum(summary.inspected.values())} frames: {summary.verdicts}", err=True)
    failed = {cam: st.last_error for cam, st in summary.cameras.items() if st.state == "failed"}
    for cam, reason in failed.items():
        typer.echo(f"edge-agent: error: camera {cam} failed: {reason}", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
def demo(
    broker: Annotated[str | None, typer.Option(
        help="publish to this broker (mqtt://HOST:PORT) instead of a private Mosquitto")] = None,
    duration: Annotated[float | None, typer.Option(
        help="stop after this many seconds (default or 0: until Ctrl-C)")] = None,
    fps: Annotated[float, typer.Option(help="synthetic camera frame rate")] = 15.0,
    seed: Annotated[int, typer.Option(help="seed of the synthetic conveyor")] = 1,
    model: Annotated[pathlib.Path | None, typer.Option(help="ONNX detector (default: the shipped one)")] = None,
    quiet: Annotated[bool, typer.Option(help="no per-event lines, only the summary")] = False,
) -> None:
    """Run the agent on a synthetic conveyor camera with the shipped model and a real Mosquitto."""
    from agent.cli.demo import run_demo

    if duration is not None and duration <= 0:
        duration = None  # 0 means "until Ctrl-C"
    try:
        code = run_demo(broker=broker, duration=duration, fps=fps, seed=seed, model=model, quiet=quiet)
    except EdgeAgentError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


@app.command()
def tail(
    broker: Annotated[str, typer.Option(help="broker URL")] = "mqtt://127.0.0.1:1883",
    prefix: Annotated[str, typer.Option(help="topic prefix")] = "edge",
    device: Annotated[str, typer.Option(help="device id, or + for all")] = "+",
    camera: Annotated[str | None, typer.Option(help="only this camera")] = None,
    verdict: Annotated[str | None, typer.Option(help="only this verdict: pass, defect or uncertain")] = None,
    validate: Annotated[bool, typer.Option(help="check every payload against the JSON Schema")] = False,
    count: Annotated[int | None, typer.Option(help="stop after this many events")] = None,
    timeout: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
) -> None:
    """Subscribe to tag events and print them, one line each."""
    from agent.publish.tail import tail as run_tail

    if verdict is not None and verdict not in ("pass", "defect", "uncertain"):
        typer.echo(f"edge-agent: error: --verdict {verdict!r}: expected pass, defect or uncertain", err=True)
        raise typer.Exit(2)
    try:
        run_tail(broker, prefix=prefix, device=device, camera=camera, verdict=verdict, validate=validate,
                 count=count, timeout=timeout)
    except EdgeAgentError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        pass


@config_app.command("check")
def config_check(file: Annotated[pathlib.Path, typer.Argument(help="YAML config file")]) -> None:
    """Check a config file; print every problem with its field path and line. Exit 0 when valid."""
    from agent.config.loader import check_config

    problems = check_config(file)
    if problems:
        typer.echo(f"{file}: {len(problems)} problem(s)", err=True)
        for p in problems:
            typer.echo(f"  - {p}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{file}: ok")


@dataset_app.command("synth")
def dataset_synth(
    out: Annotated[pathlib.Path, typer.Argument(help="new folder to write the dataset into")],
    train: Annotated[int, typer.Option(help="training images")] = 600,
    val: Annotated[int, typer.Option(help="validation images")] = 150,
    seed: Annotated[int, typer.Option(help="random seed (val uses seed+1)")] = 7,
) -> None:
    """Render a labelled YOLO-format dataset from the synthetic conveyor scene."""
    from agent.dataset.synth import write_synthetic_dataset

    def progress(split: str, done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            typer.echo(f"\r{split}: {done}/{total}", nl=done == total, err=True)

    try:
        data_yaml = write_synthetic_dataset(out, train, val, seed=seed, progress=progress)
    except EdgeAgentError as exc:
        raise _fail(exc) from None
    typer.echo(str(data_yaml))


@models_app.command("info")
def models_info(
    model: Annotated[pathlib.Path, typer.Argument(help="ONNX model file")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show a model's task, classes, input size, precision, opset, id and INT8 gate record."""
    from agent.cli.models import show_info

    try:
        show_info(model, as_json)
    except EdgeAgentError as exc:
        raise _fail(exc) from None


@models_app.command("eval")
def models_eval(
    model: Annotated[pathlib.Path, typer.Argument(help="ONNX detector")],
    data: Annotated[pathlib.Path, typer.Option(help="YOLO dataset: a data.yaml or a folder with images/ and labels/")],
    split: Annotated[str, typer.Option(help="split to evaluate")] = "val",
    out: Annotated[pathlib.Path | None, typer.Option(help="report folder (default: ./eval-<model stem>)")] = None,
    conf: Annotated[float, typer.Option(help="keep predictions above this confidence (as ultralytics val)")] = 0.001,
    iou: Annotated[float, typer.Option(help="NMS IoU threshold (as ultralytics val)")] = 0.7,
) -> None:
    """Run a detector over a labelled split: mAP50, mAP50-95, per-class P/R/F1, eval.json and report.html."""
    from agent.cli.models import run_eval

    try:
        run_eval(model, data, split, out, conf, iou)
    except EdgeAgentError as exc:
        raise _fail(exc) from None


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `edge-agent tail | head`
        sys.stderr.close()


if __name__ == "__main__":
    main()
