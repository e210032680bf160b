"""The ``edge-agent`` command line.

Argument parsing only: each command checks its options and hands them to the module that does the
work. Every EdgeAgentError becomes a one-paragraph message on stderr and exit code 2 in one place,
:mod:`agent.cli.boundary`; a traceback means a bug in edge-agent, never bad input.
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import sys
import threading
from typing import TYPE_CHECKING, Annotated, cast

import typer

from agent.cli.boundary import RootGroup
from agent.cli.dataset import export_command as dataset_export
from agent.cli.dataset import import_command as dataset_import
from agent.cli.fleet import fleet_app
from agent.cli.images import images_app
from agent.cli.models import models_app
from agent.cli.outbox import outbox_app
from agent.errors import EdgeAgentError

if TYPE_CHECKING:
    from agent.config.models import AgentConfig

app = typer.Typer(cls=RootGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Camera-side inspection agent: prefilter, triage, VLM escalation, MQTT tags.")
config_app = typer.Typer(no_args_is_help=True, help="Check configuration files.")
dataset_app = typer.Typer(no_args_is_help=True, help="Make, import and export datasets.")
app.add_typer(config_app, name="config")
app.add_typer(dataset_app, name="dataset")
app.add_typer(images_app, name="images")
app.add_typer(fleet_app, name="fleet")
app.add_typer(models_app, name="models")
app.add_typer(outbox_app, name="outbox")


def _show_version(value: bool) -> None:
    if value:
        from agent.core.version import agent_version

        typer.echo(f"edge-agent {agent_version()}")
        raise typer.Exit(0)


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_show_version, help="Show the version and exit.")] = False) -> None:
    """Camera-side inspection agent: prefilter, triage, VLM escalation, MQTT tags."""
    from agent.capture.diagnose import quiet_video_libraries

    quiet_video_libraries()  # before any command opens a video: FFmpeg reads its level once, when it starts


def _install_stop_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _install_reload_signal(reload: threading.Event) -> None:
    """SIGHUP asks for a config reload; the main thread does it (a signal handler only sets the flag)."""
    def handler(signum: int, _frame: object) -> None:
        reload.set()
    signal.signal(signal.SIGHUP, handler)


def private_files() -> None:
    """State files (outbox, recordings, snapshots, engine cache, pid file) private to the service's user, as
    the shipped units' ``UMask=0077`` makes them, also when the agent or the gateway runs outside systemd."""
    os.umask(0o077)


def _write_pid_file() -> None:
    """``<state dir>/edge-agent.pid`` (agent.ops.control), removed when the process exits."""
    import atexit

    from agent.config.loader import default_state_dir
    from agent.ops.control import remove_pid_file, write_pid_file

    atexit.register(remove_pid_file, write_pid_file(default_state_dir(os.environ)))


@app.command()
def run(
    config: Annotated[pathlib.Path | None, typer.Option(
        "--config", "-c", help="YAML config file (default: $EDGE_AGENT_CONFIG, else built-in defaults)")] = None,
    log_level: Annotated[str | None, typer.Option(
        metavar="LEVEL", help="override logging.level: debug, info, warning or error")] = None,
) -> None:
    """Run the agent as a daemon.

    It runs until SIGTERM/SIGINT (or until every file source ended); SIGHUP reloads the config file (a bad
    one is refused and logged; the running config stays)."""
    from agent import logs
    from agent.config.loader import load_config
    from agent.config.plaintext import agent_plaintext_channels
    from agent.runtime.service import AgentService

    if log_level is not None and log_level.lower() not in logs.LEVELS:
        raise EdgeAgentError(f"--log-level {log_level!r}: expected one of {', '.join(logs.LEVELS)}")
    private_files()
    path = config or (pathlib.Path(os.environ["EDGE_AGENT_CONFIG"]) if os.environ.get("EDGE_AGENT_CONFIG") else None)
    cfg = load_config(path)
    logs.configure(log_level or cfg.logging.level, cfg.logging.json_format)
    for warning in agent_plaintext_channels(cfg):  # once, at start
        logging.getLogger("agent.cli").warning(warning)
    service = AgentService(cfg)
    stop, reload = threading.Event(), threading.Event()
    _install_stop_signals(stop)
    _install_reload_signal(reload)  # a SIGHUP during start-up is handled once the agent runs
    _write_pid_file()  # after the SIGHUP handler: `edge-agent models promote` signals this pid
    service.start()
    while True:
        service.wait(stop, wake=reload)
        if not reload.is_set() or stop.is_set() or (service.loop is not None and service.loop.finished):
            break
        reload.clear()
        result = service.reload_file(path)
        if result.applied and log_level is None:
            logs.configure(service.config.logging.level, service.config.logging.json_format)
    summary = service.shutdown(timeout=15.0)
    if service.loop is not None and service.loop.error is not None:
        typer.echo(f"edge-agent: error: inference stopped: {service.loop.error}", err=True)
        raise typer.Exit(1)
    # the verdicts are every event's, the VLM's for learning cameras: "inspected 0 frames: {'pass': 153}" read as
    # if no frame had been inspected yet 153 had passed
    typer.echo(f"inspected {sum(summary.inspected.values())} frames with the prefilter; verdicts published: "
               f"{summary.verdicts}", err=True)
    for cam, counts in service.learn_tally.snapshot().items():  # learn mode: what became of the frames
        typer.echo(f"learn mode, camera {cam}: " + ", ".join(f"{k} {n}" for k, n in counts.items()), err=True)
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
    seed: Annotated[int, typer.Option(min=0, help="seed of the synthetic conveyor")] = 1,
    model: Annotated[pathlib.Path | None, typer.Option(
        help="ONNX prefilter: a detector or a classifier (default: the shipped detector)")] = None,
    quiet: Annotated[bool, typer.Option(help="no per-event lines, only the summary")] = False,
) -> None:
    """Run the agent on a synthetic conveyor camera with the shipped model and a real Mosquitto."""
    from agent.tooling.demo import run_demo

    if duration is not None and duration < 0:
        raise EdgeAgentError(f"--duration {duration:g}: expected 0 (until Ctrl-C) or a positive number of seconds")
    if duration == 0:
        duration = None  # 0 means "until Ctrl-C"
    code = run_demo(broker=broker, duration=duration, fps=fps, seed=seed, model=model, quiet=quiet)
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
    username: Annotated[str | None, typer.Option(help="broker user name", envvar="EDGE_TAIL_USERNAME")] = None,
    password_file: Annotated[pathlib.Path | None, typer.Option(
        help="file whose first line is the broker password (or set EDGE_TAIL_PASSWORD)",
        envvar="EDGE_TAIL_PASSWORD_FILE")] = None,
) -> None:
    """Subscribe to tag events and print them, one line each (control characters escaped)."""
    from agent.publish.tail import broker_login, plaintext_login
    from agent.publish.tail import tail as run_tail

    for option, value in (("--count", count), ("--timeout", timeout)):
        if value is not None and value <= 0:
            raise EdgeAgentError(f"{option} {value:g}: expected a positive number")
    if verdict is not None and verdict not in ("pass", "defect", "uncertain"):
        raise EdgeAgentError(f"--verdict {verdict!r}: expected pass, defect or uncertain")
    try:
        user, password = broker_login(username, password_file, os.environ)
        if warning := plaintext_login(broker, password):
            typer.echo(f"edge-agent: warning: {warning}", err=True)
        run_tail(broker, prefix=prefix, device=device, camera=camera, verdict=verdict, validate=validate,
                 count=count, timeout=timeout, username=user, password=password)
    except KeyboardInterrupt:
        pass


@app.command()
def tag(
    paths: Annotated[list[pathlib.Path], typer.Argument(
        metavar="PATH", help="image files (JPEG, PNG, BMP, TIFF), folders (recursive) and videos", show_default=False)],
    out: Annotated[pathlib.Path, typer.Option("--out", "-o", help="output file: .jsonl, .csv or .json")],
    output_format: Annotated[str | None, typer.Option(
        "--format", help="jsonl, csv or json (default: from the --out suffix)")] = None,
    config: Annotated[pathlib.Path | None, typer.Option(
        "--config", "-c", help="agent YAML config: model, triage band, escalation.gateway (default: "
                               "$EDGE_AGENT_CONFIG, else built-in defaults)")] = None,
    model: Annotated[pathlib.Path | None, typer.Option(help="ONNX prefilter (default: the config's model)")] = None,
    video_step: Annotated[int, typer.Option(help="tag every Nth frame of a video")] = 15,
    redo: Annotated[bool, typer.Option(help="tag every item again, replacing the output")] = False,
    labels: Annotated[pathlib.Path | None, typer.Option(
        help="ground truth: a folder of YOLO labels (labels/ beside images/) or a CSV file image,label; when "
             "every item is tagged, scores the prefilter alone, the cascade and (with a gateway) the VLM on "
             "every image")] = None,
    report: Annotated[pathlib.Path | None, typer.Option(
        help="folder for the --labels evaluation (default: beside --out, <out stem>-eval/)")] = None,
    throttle: Annotated[float, typer.Option(hidden=True, help="seconds to pause after each item (tests)")] = 0.0,
) -> None:
    """Tag image files, folders and videos offline into one output file.

    The daemon's cascade (prefilter, triage, and escalation when the config names a gateway) writes one record
    per item; a rerun skips the items already in the output. Exit 3 when inputs were skipped (unreadable or not
    images; the rest is tagged); Ctrl-C stops after the current item (exit 130)."""
    from agent.tooling.batch.tag import TagOptions, run_tag

    code = run_tag(TagOptions(paths=tuple(paths), out=out, fmt=output_format, config=config, model=model,
                              video_step=video_step, redo=redo, throttle_s=throttle, labels=labels,
                              report=report))
    raise typer.Exit(code)


@app.command()
def gateway(
    config: Annotated[pathlib.Path | None, typer.Option(
        "--config", "-c", help="gateway YAML config (default: $EDGE_GATEWAY_CONFIG, else built-in defaults)")] = None,
    log_level: Annotated[str | None, typer.Option(help="override logging.level")] = None,
) -> None:
    """Run the escalation gateway (gRPC, next to Ollama) until SIGTERM/SIGINT."""
    from agent.gateway.extra import require_ollama_extra

    private_files()
    require_ollama_extra()  # before the gateway's modules, which import ollama
    from agent.gateway.main import run_gateway

    run_gateway(config, log_level)


@app.command("gateway-modelfile")
def gateway_modelfile(
    taxonomy: Annotated[pathlib.Path | None, typer.Option(
        help="the plant's taxonomy file (the gateway's `taxonomy:`); without it: the conveyor's defect classes")]
        = None,
    base: Annotated[str, typer.Option("--from", help="the vision model it builds on (`ollama pull` it first)")]
        = "llava:7b",
    name: Annotated[str, typer.Option(help="the model name the header's `ollama create` line uses")]
        = "edge-inspector",
    out: Annotated[pathlib.Path | None, typer.Option("--out", "-o", help="write it here (default: stdout)")] = None,
) -> None:
    """Print an Ollama Modelfile that asks the VLM about the taxonomy's line: its part, what good looks like,
    each defect label with its description; then `ollama create NAME -f FILE` on the gateway host."""
    from agent.gateway.modelfile import modelfile

    text = modelfile(taxonomy, base, name, out)
    if out is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"edge-agent: wrote {out}; on the gateway host: ollama create {name} -f {out}", err=True)


@app.command()
def doctor(
    config: Annotated[pathlib.Path | None, typer.Option(
        "--config", "-c", help="YAML config file (default: $EDGE_AGENT_CONFIG, else built-in defaults)")] = None,
    credentials_dir: Annotated[pathlib.Path | None, typer.Option(
        help="where the systemd credentials are (default: $CREDENTIALS_DIRECTORY, else /etc/edge-agent/credentials, "
             "the unit's LoadCredential= source)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each camera, the broker and the gateway")] = 12.0,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Check that this box can run the agent, and say what to do.

    Checks the config, model and gate record, ONNX Runtime providers (GPU too), every camera, the MQTT broker,
    the escalation gateway and Ollama's models; prints what is fine and what to do. Exit 1 if anything failed."""
    from agent.ops.doctor import DoctorOptions, exit_code, render_json, render_table, run_checks

    if timeout <= 0:
        raise EdgeAgentError(f"--timeout {timeout:g}: expected a positive number of seconds")
    checks = run_checks(DoctorOptions(config=config, credentials_dir=credentials_dir, timeout_s=timeout))
    typer.echo(render_json(checks) if as_json else render_table(checks), nl=False)
    raise typer.Exit(exit_code(checks))


@config_app.command("check")
def config_check(file: Annotated[pathlib.Path, typer.Argument(help="YAML config file")]) -> None:
    """Check a config file; print every problem with its field path and line. Exit 0 when valid.

    The model file is opened too, as the agent and `edge-agent doctor` do (not the cameras or the broker), unless
    every camera is in learn mode (no model runs then)."""
    from agent.config.loader import config_report
    from agent.config.models import AgentConfig
    from agent.ops.doctor import model_problems

    report = config_report(file)
    problems = list(report.problems)
    if report.model is not None and (report.config is None or report.config.needs_model):
        problems += model_problems(report.config or AgentConfig(model=report.model))
    if problems:
        typer.echo(f"{file}: {len(problems)} problem(s)", err=True)
        for p in problems:
            typer.echo(f"  - {p}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{file}: ok")
    if report.config is not None:
        _echo_learning(report.config)


def _echo_learning(config: AgentConfig) -> None:
    """``config check``'s word on learn mode: which cameras learn and how their frames are sampled."""
    for cam in config.cameras:
        if config.learns(cam):
            learn = config.learn_for(cam)
            change = (f"scene changes (over {learn.scene_change_bits} of 63 hash bits) up to "
                      f"{learn.scene_changes_per_minute:g}/min" if learn.scene_change_bits is not None
                      else "no scene changes")
            typer.echo(f"  camera {cam.id}: learn mode, no prefilter: {learn.sample_per_minute:g} frame(s)/min on "
                       f"schedule plus {change} go to the VLM; the other frames are counted, not published"
                       + ("; answers recorded" if config.records(cam) else ""))


@dataset_app.command("synth")
def dataset_synth(
    out: Annotated[pathlib.Path, typer.Argument(help="new folder to write the dataset into")],
    train: Annotated[int, typer.Option(help="training images")] = 600,
    val: Annotated[int, typer.Option(help="validation images")] = 150,
    seed: Annotated[int, typer.Option(help="random seed (val uses seed+1)")] = 7,
    task: Annotated[str, typer.Option(
        help="detect: YOLO layout (images/, labels/, data.yaml); classify: one folder per frame class "
             "(train/<class>/, val/<class>/), classes pass + the defect types")] = "detect",
    label_rule: Annotated[str, typer.Option(
        help="classify: the class of a frame with several defect types: severity (the most severe: "
             "missing > hole > scratch > stain on the conveyor, crack > inclusion > pit > dent > scratch > stain "
             "on the surface) or area (the largest total box area)")] = "severity",
    scene: Annotated[str, typer.Option(
        help="conveyor: colour parts on a belt, 640x480, 4 defect classes; surface: grey textured surface "
             "close-ups, 640x640, single-channel images, 6 smaller defect classes")] = "conveyor",
    fmt: Annotated[str, typer.Option(
        "--format", help="detect: how the boxes are written: yolo (what models train reads), coco (COCO JSON) or "
                         "voc (Pascal VOC XML), the latter two for `dataset import`")] = "yolo",
) -> None:
    """Render a labelled dataset (detection or classification) from a synthetic scene."""
    from agent.capture.scenes import SCENES
    from agent.tooling.dataset.synth import LABEL_RULES, LabelRule, write_classify_dataset, write_synthetic_dataset

    def progress(split: str, done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            typer.echo(f"\r{split}: {done}/{total}", nl=done == total, err=True)

    if scene not in SCENES:
        raise EdgeAgentError(f"--scene {scene!r}: expected one of {', '.join(SCENES)}")
    if task == "detect":
        written = write_synthetic_dataset(out, train, val, seed=seed, progress=progress, scene=scene, fmt=fmt)
    elif fmt != "yolo":
        raise EdgeAgentError(f"--format {fmt}: boxes are written for --task detect; a classify dataset is "
                             "image folders (leave --format out)")
    elif task == "classify":
        if label_rule not in LABEL_RULES:
            raise EdgeAgentError(f"--label-rule {label_rule!r}: expected one of {', '.join(LABEL_RULES)}")
        written = write_classify_dataset(out, train, val, seed=seed, progress=progress,
                                         rule=cast(LabelRule, label_rule), scene=scene)
    else:
        raise EdgeAgentError(f"--task {task!r}: expected detect or classify")
    typer.echo(str(written))


dataset_app.command("export")(dataset_export)
dataset_app.command("import")(dataset_import)


def main() -> None:
    try:
        app(prog_name="edge-agent")
    except BrokenPipeError:  # `edge-agent tail | head`
        sys.stderr.close()


if __name__ == "__main__":
    main()
