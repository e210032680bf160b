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
from agent.cli.outbox import outbox_app
from agent.errors import EdgeAgentError

if TYPE_CHECKING:
    from agent.config.models import AgentConfig

app = typer.Typer(cls=RootGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Camera-side inspection agent: prefilter, triage, VLM escalation, MQTT tags.")
config_app = typer.Typer(no_args_is_help=True, help="Check configuration files.")
dataset_app = typer.Typer(no_args_is_help=True, help="Make, import and export datasets.")
models_app = typer.Typer(no_args_is_help=True, help=(
    "Prefilter models: inspect, evaluate, quantize to INT8, fine-tune, promote and roll back; TensorRT engines."))
app.add_typer(config_app, name="config")
app.add_typer(dataset_app, name="dataset")
app.add_typer(models_app, name="models")
app.add_typer(outbox_app, name="outbox")


def _show_version(value: bool) -> None:
    if value:
        from agent.publish.mqtt_publisher import agent_version

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
    from agent.cli.demo import run_demo

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


@models_app.command("info")
def models_info(
    model: Annotated[pathlib.Path, typer.Argument(help="ONNX model file")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show a model's task, classes, input size, precision, opset, id and INT8 gate record."""
    from agent.tooling.models import show_info

    show_info(model, as_json)


@models_app.command("eval")
def models_eval(
    model: Annotated[pathlib.Path, typer.Argument(help="ONNX detector or classifier (the task is read from it)")],
    data: Annotated[pathlib.Path, typer.Option(
        help="detector: a YOLO dataset (a data.yaml, or a folder with images/ and labels/); classifier: a "
             "classify folder (<split>/<class>/*.jpg)")],
    split: Annotated[str, typer.Option(help="split to evaluate")] = "val",
    out: Annotated[pathlib.Path | None, typer.Option(help="report folder (default: ./eval-<model stem>)")] = None,
    conf: Annotated[float, typer.Option(
        help="detector: keep predictions above this confidence (as ultralytics val)")] = 0.001,
    iou: Annotated[float, typer.Option(help="detector: NMS IoU threshold (as ultralytics val)")] = 0.7,
) -> None:
    """Evaluate a model on a labelled split: eval.json and report.html.

    Detector: mAP50, mAP50-95, per-class P/R/F1. Classifier: accuracy, macro F1, per-class P/R/F1, confusion
    matrix, triage coverage."""
    from agent.tooling.models import run_eval

    run_eval(model, data, split, out, conf, iou)


@models_app.command("quantize")
def models_quantize(
    model: Annotated[pathlib.Path, typer.Argument(help="FP32 ONNX prefilter model")],
    calib: Annotated[str, typer.Option(help="calibration frames: a folder of camera frames (JPEG/PNG, one size), "
                                            "or 'synthetic' for the synthetic conveyor scene")],
    calib_count: Annotated[int, typer.Option(help="calibration frames to use (spread over a larger folder)")] = 300,
    calib_seed: Annotated[int, typer.Option(help="seed of the synthetic calibration frames")] = 1000,
    val: Annotated[str, typer.Option(
        help="labelled validation set for the gate: a YOLO data.yaml or folder, or 'synthetic' for the held-out "
             "split of the shipped training script")] = "synthetic",
    val_split: Annotated[str, typer.Option(help="split of --val to evaluate")] = "val",
    synthetic_seed: Annotated[int, typer.Option(help="training seed whose held-out split --val synthetic renders")] = 7,
    val_count: Annotated[int, typer.Option(help="images in the synthetic held-out split")] = 150,
    flavour: Annotated[str, typer.Option(
        help="cpu (U8S8, ONNX Runtime CPU), tensorrt (S8S8 symmetric), or both")] = "both",
    out_dir: Annotated[pathlib.Path | None, typer.Option(help="where INT8 files go (default: next to MODEL)")] = None,
    max_drop: Annotated[float, typer.Option(
        help="refuse when the metric (mAP50 / accuracy) drops by more points")] = 1.0,
    max_verdict_changes: Annotated[float, typer.Option(
        help="refuse when more than this percentage of frame verdicts change")] = 2.0,
    float_stem: Annotated[int, typer.Option(
        min=0, help="leading convolutions kept FP32 (they see the raw image; faint defects live in small "
                    "contrasts there): 2 for the shipped detector")] = 0,
    reduce_range: Annotated[bool, typer.Option(help="7-bit weights, for U8S8 on x86 CPUs without VNNI")] = False,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads while evaluating")] = 2,
    accept: Annotated[float, typer.Option(help="triage accept threshold for the verdict comparison")] = 0.6,
    reject: Annotated[float, typer.Option(help="triage reject threshold for the verdict comparison")] = 0.25,
    break_decode: Annotated[bool, typer.Option(
        hidden=True, help="quantize the decode too (wrong on purpose: shows the gate refusing)")] = False,
) -> None:
    """Quantize to INT8 (QDQ) behind an accuracy gate.

    The result is refused (exit 1) when it loses accuracy; a passing one gets <model>.gate.json."""
    from agent.config.models import TriageConfig
    from agent.tooling.evaluation.gate import GateLimits
    from agent.tooling.quantize.workflow import QuantizeOptions, run_quantize

    try:
        limits = GateLimits(max_drop, max_verdict_changes)
        band = TriageConfig(accept=accept, reject=reject)
    except ValueError as exc:
        raise EdgeAgentError(str(exc).splitlines()[-1] if "validation error" in str(exc) else str(exc)) from None
    code = run_quantize(QuantizeOptions(
        model=model, calib=calib, calib_count=calib_count, calib_seed=calib_seed, val=val, val_split=val_split,
        synthetic_seed=synthetic_seed, val_count=val_count, flavour=flavour, out_dir=out_dir, limits=limits,
        reduce_range=reduce_range, float_stem=float_stem,
        threads=threads, band=band, break_decode=break_decode,
        command="edge-agent models quantize " + " ".join(sys.argv[3:])))
    raise typer.Exit(code)


_ConfigOption = Annotated[pathlib.Path | None, typer.Option(
    "--config", "-c", help="the agent's YAML config: model.path is the model it runs (default: $EDGE_AGENT_CONFIG)")]
_ReloadOption = Annotated[bool, typer.Option(
    "--reload/--no-reload", help="ask the running agent to reload (SIGHUP) and wait until it runs the new model; "
                                 "--no-reload only replaces the files")]
_PidOption = Annotated[int | None, typer.Option(help="the agent's pid (default: read from its pid file)")]
_UnitOption = Annotated[str | None, typer.Option(help="reload through systemd: `systemctl reload UNIT`")]
_PidFileOption = Annotated[pathlib.Path | None, typer.Option(
    help="the agent's pid file (default: $STATE_DIRECTORY/edge-agent.pid, else /var/lib/edge-agent/edge-agent.pid)")]
_HealthOption = Annotated[str | None, typer.Option(
    help="the agent's /healthz URL, to see it run the new model (default: from the config's metrics.listen)")]
_WaitOption = Annotated[float, typer.Option(help="seconds to wait for the agent to run the new model")]
_KeepOption = Annotated[int, typer.Option(help="models kept in the store (<model folder>/.history)")]


def _config_path(config: pathlib.Path | None) -> pathlib.Path | None:
    return config or (pathlib.Path(os.environ["EDGE_AGENT_CONFIG"]) if os.environ.get("EDGE_AGENT_CONFIG") else None)


@models_app.command("promote")
def models_promote(
    candidate: Annotated[pathlib.Path, typer.Argument(
        help="an ONNX model, or a candidate folder from `edge-agent models train` (its INT8 file when the agent "
             "runs INT8, else its FP32 file)")],
    val: Annotated[pathlib.Path, typer.Option(
        help="held-out labelled set: a YOLO dataset (data.yaml or folder) for a detector, a classify folder "
             "(<split>/<class>/) for a classifier")],
    config: _ConfigOption = None,
    split: Annotated[str, typer.Option(help="split of --val to evaluate")] = "val",
    margin: Annotated[float, typer.Option(
        help="refuse a candidate whose metric is below the current model's by more than this (0..1 scale: 0.01 "
             "= one point; negative: the candidate must be better by that much)")] = 0.01,
    metric: Annotated[str | None, typer.Option(
        help="map50 or map50-95 (detector; default map50), accuracy or macro-f1 (classifier; default accuracy)")
    ] = None,
    reload: _ReloadOption = True,
    pid: _PidOption = None,
    unit: _UnitOption = None,
    pid_file: _PidFileOption = None,
    health: _HealthOption = None,
    wait: _WaitOption = 60.0,
    keep: _KeepOption = 5,
    report: Annotated[pathlib.Path | None, typer.Option(
        help="folder for the before/after report (default: <candidate folder>/promotion-<time>/)")] = None,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime intra-op threads while evaluating")] = 2,
    allow_new_classes: Annotated[bool, typer.Option(
        "--allow-new-classes", help="let a candidate with other classes than the running model's replace it "
                                    "(models train --new-classes); --val holds the candidate's classes, and only "
                                    "the candidate is evaluated (refused when it finds none of them)")] = False,
) -> None:
    """Put a better model into the running agent, after a comparison.

    Evaluates CANDIDATE against the model the agent runs on a held-out set; refuses it (exit 1) when it is worse
    by more than --margin, else replaces the model file (the old one kept for `models rollback`) and has the
    running agent swap it in live. Exit 3 when the agent did not take it."""
    from agent.tooling.promote import AgentTarget, PromoteOptions, run_promote

    target = AgentTarget(reload=reload, pid=pid, unit=unit, pid_file=pid_file, health=health, wait_s=wait)
    code = run_promote(PromoteOptions(candidate=candidate, config=_config_path(config), val=val, split=split,
                                      margin=margin, metric=metric, target=target, keep=keep, report=report,
                                      threads=threads, allow_new_classes=allow_new_classes))
    raise typer.Exit(code)


@models_app.command("rollback")
def models_rollback(
    config: _ConfigOption = None,
    reload: _ReloadOption = True,
    pid: _PidOption = None,
    unit: _UnitOption = None,
    pid_file: _PidFileOption = None,
    health: _HealthOption = None,
    wait: _WaitOption = 60.0,
    keep: _KeepOption = 5,
) -> None:
    """Put back the model the last promotion replaced.

    Takes it from <model folder>/.history and has the running agent swap it in live; a second rollback goes
    one promotion further back."""
    from agent.tooling.promote import AgentTarget, RollbackOptions, run_rollback

    target = AgentTarget(reload=reload, pid=pid, unit=unit, pid_file=pid_file, health=health, wait_s=wait)
    code = run_rollback(RollbackOptions(config=_config_path(config), target=target, keep=keep))
    raise typer.Exit(code)


@models_app.command("train")
def models_train(
    data: Annotated[pathlib.Path, typer.Option(
        help="training data: a YOLO dataset (data.yaml with names, train, val) for a detector, or image "
             "folders (train/<class>/, val/<class>/) for a classifier")],
    base: Annotated[pathlib.Path, typer.Option(
        help="model to start from: the ONNX detector or classifier the agent runs (FP32 or INT8); for a detector "
             "also an ultralytics checkpoint (yolov8n.pt) or model yaml (yolov8s.yaml: from scratch)")],
    out: Annotated[pathlib.Path | None, typer.Option(
        help="new folder for the candidate (default: candidates/<model>-<UTC time>)")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="training epochs")] = 10,
    imgsz: Annotated[str | None, typer.Option(
        help="training input size: one side for a detector (320), HxW for a classifier (192x256); "
             "default: the base model's")] = None,
    lr0: Annotated[float | None, typer.Option(
        min=0.0, help="initial learning rate, AdamW (default: 2e-4 detector, 2e-5 classifier)")] = None,
    batch: Annotated[int, typer.Option(min=1, help="images per training step")] = 16,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for training and evaluation")] = 2,
    seed: Annotated[int, typer.Option(help="random seed (training is deterministic per seed and threads)")] = 7,
    quantize: Annotated[bool, typer.Option(
        help="make the INT8 model and run its accuracy gate on the val split")] = True,
    overwrite: Annotated[bool, typer.Option(help="replace what is in --out")] = False,
    verbose: Annotated[bool, typer.Option(help="show the trainer's own output")] = False,
    export_epoch: Annotated[str, typer.Option(
        help="detector: the epoch exported, best (by the val split's fitness) or last; a dataset recorded by the "
             "agent has val boxes from the base model itself, which makes the first epochs look best: use last "
             "there and let `models promote` judge. The classifier always exports its last epoch")] = "best",
    new_classes: Annotated[bool, typer.Option(
        "--new-classes", help="the dataset's classes differ from the base model's: train a new head for them on "
                              "the base's backbone (detector input: the dataset's image size unless --imgsz)")] = False,
    time: Annotated[float | None, typer.Option(
        "--time", help="training budget in hours (like ultralytics' time=; replaces --epochs for a detector, "
                       "stops the classifier's epochs), e.g. 0.5")] = None,
    taxonomy: Annotated[pathlib.Path | None, typer.Option(
        help="the plant's taxonomy file: every class of the dataset must be one of its labels or synonyms")] = None,
) -> None:
    """Fine-tune the detector or classifier into a candidate folder.

    Offline (needs the train extra); the folder holds the FP32 ONNX, the INT8 ONNX with its gate record, and a
    model card. Exit 1 when the INT8 gate refused."""
    from agent.tooling.training.command import run_train_command

    code = run_train_command(data, base, out, epochs, imgsz, lr0, batch, threads, seed, quantize, overwrite,
                             verbose, "edge-agent models train " + " ".join(sys.argv[3:]), export_epoch,
                             new_classes=new_classes, time_h=time, taxonomy=taxonomy)
    raise typer.Exit(code)


@models_app.command("build-engine")
def models_build_engine(
    model: Annotated[pathlib.Path, typer.Argument(help="ONNX model: the TensorRT INT8 flavour (S8S8 Q/DQ) or FP32")],
    precision: Annotated[str | None, typer.Option(
        help="auto (int8 for a Q/DQ model, else fp32), int8, fp16 or fp32; default: model.precision")] = None,
    batch: Annotated[str | None, typer.Option(
        help="batch profile MIN:OPT:MAX (or N = 1:N:N); default: the agent's, 1:N:N with N = model.max_batch "
             "for a detector, 1 for a classifier")] = None,
    cache_dir: Annotated[pathlib.Path | None, typer.Option(
        help="engine cache directory; default: model.engine_cache_dir, else $STATE_DIRECTORY/engines")] = None,
    config: Annotated[pathlib.Path | None, typer.Option(
        "--config", "-c", help="agent config whose model settings give the defaults (default: $EDGE_AGENT_CONFIG)")
    ] = None,
    device: Annotated[int | None, typer.Option(help="CUDA device index; default: model.gpu_device")] = None,
    force: Annotated[bool, typer.Option(help="build again even when a valid plan is cached")] = False,
) -> None:
    """Build the TensorRT plan for model.runtime tensorrt.

    The plan is cached by model hash, GPU, TensorRT version, precision and batch profile; shows progress and
    prints the plan's path."""
    from agent.tooling.engine import BuildEngineOptions, main_build_engine

    main_build_engine(BuildEngineOptions(model=model, precision=precision, batch=batch, cache_dir=cache_dir,
                                         config=config, device=device, force=force))


def main() -> None:
    try:
        app(prog_name="edge-agent")
    except BrokenPipeError:  # `edge-agent tail | head`
        sys.stderr.close()


if __name__ == "__main__":
    main()
