"""``edge-agent models promote`` and ``edge-agent models rollback``: put a retrained model into the running
agent behind an accuracy gate, and take it back out.

promote CANDIDATE --config CONFIG --val DIR:

1. read the config; the model it runs is ``model.path`` (the *current* model);
2. pick the candidate file (CANDIDATE is an ONNX file, or a folder written by ``edge-agent models train``:
   see :func:`resolve_candidate`); refuse one of another task, with other classes (in another order
   too: class ids must mean the same) unless ``--allow-new-classes``, the very same file, or, with
   ``model.require_gate``, an INT8 file without a passing gate record;
3. find the running agent (``--pid``, ``--unit``, else its pid file) before anything slow;
4. evaluate both models on the held-out set (the ``models eval`` report for each, and a before/after
   ``promotion.html``/``promotion.json``, in ``<candidate folder>/promotion-<time>/``) and judge
   (:mod:`agent.tooling.evaluation.promotion`): refused -> exit 1, nothing changed. With new classes only the
   candidate is evaluated (on a held-out set of its classes): the running model's class ids mean other things;
5. keep the current model and its sidecars in the store (:mod:`agent.prefilter.store`), replace the
   files at ``model.path`` atomically, and ask the agent to reload (SIGHUP; the agent loads and warms up
   the new model beside the running one and swaps it in between two frames);
6. watch ``/healthz`` until the agent runs the new model; if the agent refuses it, the previous files
   are put back (the agent still runs them) and the exit code is 3.

rollback --config CONFIG: the newest model a promotion replaced goes back the same way.

Exit codes: 0 done; 1 the gate refused the candidate; 2 bad input (nothing changed); 3 the files were
replaced but the agent did not confirm the reload (refused: the files are put back; no answer: they stay).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import pathlib
import statistics
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import typer

from agent.errors import EdgeAgentError, ModelError

if TYPE_CHECKING:
    from agent.config.models import AgentConfig, TriageConfig
    from agent.ops.control import HealthSnapshot, ReloadOutcome, ReloadRequest
    from agent.prefilter.store import ModelStore, StoredModel
    from agent.tooling.evaluation.promotion import ModelScore
    from agent.tooling.models import ModelSummary

EXIT_REFUSED = 1
EXIT_RELOAD_FAILED = 3
_EVAL_MIN_SCORE = 0.001  # ultralytics val settings, as `models eval` and the INT8 gate
_EVAL_IOU = 0.7
_EVAL_MAX_DET = 300


@dataclasses.dataclass(frozen=True)
class AgentTarget:
    """How to reach the running agent: ``reload`` False means only replace the files."""

    reload: bool = True
    pid: int | None = None
    unit: str | None = None
    pid_file: pathlib.Path | None = None
    health: str | None = None  # /healthz URL (default: from the config's metrics.listen)
    wait_s: float = 60.0

    def __post_init__(self) -> None:
        if self.wait_s <= 0:
            raise EdgeAgentError(f"--wait {self.wait_s:g}: expected a positive number of seconds")
        if self.pid is not None and self.unit is not None:
            raise EdgeAgentError("give --pid or --unit, not both")


@dataclasses.dataclass(frozen=True)
class PromoteOptions:
    candidate: pathlib.Path
    config: pathlib.Path | None
    val: pathlib.Path
    split: str = "val"
    margin: float = 0.01
    metric: str | None = None  # None: mAP50 for a detector, accuracy for a classifier
    target: AgentTarget = AgentTarget()
    keep: int = 5
    report: pathlib.Path | None = None
    threads: int = 2
    allow_new_classes: bool = False  # a candidate with other classes than the running model's may replace it


@dataclasses.dataclass(frozen=True)
class RollbackOptions:
    config: pathlib.Path | None
    target: AgentTarget = AgentTarget()
    keep: int = 5


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _load(config: pathlib.Path | None) -> AgentConfig:
    from agent.config.loader import load_config

    if config is None:
        raise EdgeAgentError("give --config: the agent's config file names the model it runs (model.path)")
    return load_config(config)


# -- the candidate -----------------------------------------------------------------------------------------


def resolve_candidate(candidate: pathlib.Path, running: ModelSummary) -> tuple[pathlib.Path, str]:
    """The candidate model file, and a note on how it was chosen.

    A file is taken as it is. A folder (as ``edge-agent models train`` writes it) must hold one FP32 model
    ``<name>.onnx`` (the one its ``candidate.json`` names, if it has one). When the running model is INT8,
    the folder's INT8 file of the running one's flavour (``<name>.int8.onnx`` for the CPU flavour,
    ``<name>.int8-trt.onnx`` for TensorRT) is taken, and a folder without it is refused (its gate refused it,
    or it was not made): running FP32 where INT8 ran is a choice to make by naming the FP32 file. When the
    running model is FP32 (or FP16), the FP32 file is taken.
    """
    from agent.tooling.quantize.int8 import FLAVOURS

    if candidate.is_file():
        return candidate, ""
    base, record = _folder_fp32(candidate)
    if running.precision != "int8":
        return base, f"{base.name} from the candidate folder (the running model is {running.precision.upper()})"
    flavour = str((running.quantization or {}).get("flavour") or "cpu")
    if flavour not in FLAVOURS:
        flavour = "cpu"
    int8 = FLAVOURS[flavour].output_path(base)
    if not int8.is_file():
        why = f"candidate.json says: INT8 {record['int8']}" if isinstance(record.get("int8"), str) else \
            "did its INT8 gate refuse it?"
        raise ModelError(f"the running model is INT8 ({flavour} flavour) but the candidate folder {candidate} has "
                         f"no {int8.name} ({why}); promote {base} to run the FP32 model instead")
    return int8, f"{int8.name} from the candidate folder (the running model is INT8, {flavour} flavour)"


def _folder_fp32(candidate: pathlib.Path) -> tuple[pathlib.Path, dict[str, Any]]:
    """A candidate folder's FP32 model (the one its ``candidate.json`` names, else its one ``<name>.onnx``) and
    its ``candidate.json`` ({} without one)."""
    from agent.tooling.quantize.int8 import FLAVOURS

    if not candidate.exists():
        raise ModelError(f"candidate {candidate} does not exist; expected an ONNX file or a candidate folder "
                         "written by `edge-agent models train`")
    record = _candidate_record(candidate)
    named = (record.get("files") or {}).get("fp32") if isinstance(record.get("files"), dict) else None
    if isinstance(named, str) and (pathlib.PurePath(named).name != named or named in ("", ".", "..")):
        # candidate.json names files in its own folder: a path (../x.onnx, /etc/x) is not followed
        raise ModelError(f"candidate folder {candidate}: candidate.json files.fp32 {named!r} is not a file name in "
                         "the folder (a path is not followed); expected <name>.onnx as `edge-agent models train` "
                         "writes it")
    if isinstance(named, str) and (candidate / named).is_file():
        base = candidate / named
    else:
        onnx_files = sorted(p for p in candidate.glob("*.onnx") if not p.name.startswith("."))
        flavour_suffixes = tuple(f.suffix for f in FLAVOURS.values())
        fp32 = [p for p in onnx_files if not p.name.endswith(flavour_suffixes)]
        if len(fp32) != 1:
            found = ", ".join(p.name for p in onnx_files) or "no .onnx files"
            raise ModelError(f"candidate folder {candidate}: expected one FP32 model <name>.onnx (with its INT8 "
                             f"<name>.int8.onnx beside it), found {found}; give the model file instead")
        base = fp32[0]
    return base, record


def resolve_first_candidate(candidate: pathlib.Path) -> tuple[pathlib.Path, str]:
    """The candidate file for a line that runs no model yet: a file as it is; from a candidate folder its
    INT8 file (CPU flavour) when its gate made one, else its FP32 file, with a note saying which."""
    from agent.tooling.quantize.int8 import FLAVOURS

    if candidate.is_file():
        return candidate, ""
    fp32, _ = _folder_fp32(candidate)
    int8 = FLAVOURS["cpu"].output_path(fp32)
    if int8.is_file():
        return int8, f"{int8.name} from the candidate folder (the line's first model: INT8 where the gate made one)"
    return fp32, f"{fp32.name} from the candidate folder (the line's first model; the folder has no {int8.name})"


def check_first_candidate(candidate: ModelSummary, require_gate: bool) -> list[str]:
    """The checks of :func:`check_candidate` that do not need a running model (a learning line's first one)."""
    notes = [f"first model: every camera learns and model.path does not exist yet; the candidate's classes "
             f"[{', '.join(candidate.names)}] are the line's, only the candidate is evaluated"]
    if candidate.precision == "int8" and candidate.gate_state != "passed":
        if require_gate:
            raise ModelError(f"{candidate.gate_detail} (model.require_gate is on: the agent would refuse it)")
        notes.append(f"warning: {candidate.gate_detail}; promoting it anyway (model.require_gate is off)")
    return notes


def _model_path(cfg: AgentConfig, config: pathlib.Path | None) -> pathlib.Path:
    """Where the promoted model goes: ``model.path``. A config with no model (``model: null``) names no place;
    a missing file is the line's first model only when no camera inspects (else there is a model to compare)."""
    target = cfg.model.path
    if not cfg.needs_model and "model" not in cfg.model_fields_set:
        raise EdgeAgentError(f"config {config} has no model (model: null: every camera learns), so there is no "
                             "model.path to install the candidate at; give the line's model a place, e.g. "
                             "`model: {path: /var/lib/edge-agent/models/line3.onnx}` with `mode: learn` (the "
                             "cameras keep learning until you set mode: inspect), and promote again")
    if cfg.needs_model and not target.is_file():
        raise ModelError(f"model.path {target} (config {config}) does not exist: there is no running model to "
                         "compare the candidate with; copy a model there first (a line with no model yet: "
                         "mode: learn on its cameras)")
    return target


def _save_current(store: ModelStore, current: ModelSummary | None, candidate: ModelSummary,
                  target: pathlib.Path) -> StoredModel | None:
    """Keep the installed model in the store before it is replaced (None: there is none, a first model);
    ModelError when it changed while the candidate was evaluated."""
    if current is None:
        if target.exists():
            raise ModelError(f"{target} appeared while the candidate was evaluated; nothing was replaced, run the "
                             "promotion again")
        return None
    saved = store.save_installed("replaced", f"replaced by {candidate.model_id} ({candidate.path})")
    if saved.sha256 != current.sha256:
        store.drop(saved)
        raise ModelError(f"{target} changed while the candidate was evaluated (sha256 {current.sha256[:12]} -> "
                         f"{saved.sha256[:12]}); nothing was replaced, run the promotion again")
    return saved


def _candidate_record(folder: pathlib.Path) -> dict[str, Any]:
    """``candidate.json`` of a folder from ``edge-agent models train`` ({} when there is none or it is unreadable:
    the folder's files are then looked at directly)."""
    import json

    try:
        raw = json.loads((folder / "candidate.json").read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def check_candidate(current: ModelSummary, candidate: ModelSummary, require_gate: bool,
                    allow_new_classes: bool = False) -> list[str]:
    """ModelError when the candidate cannot replace the current model; otherwise notes (warnings) to print."""
    if candidate.sha256 == current.sha256:
        raise ModelError(f"candidate {candidate.path} is the model the agent already runs ({current.path}, "
                         f"sha256 {current.sha256[:12]}); nothing to promote")
    if candidate.task != current.task:
        raise ModelError(f"candidate {candidate.path} is a {candidate.task} model; the running model {current.path} "
                         f"is a {current.task} model. A promotion keeps the task: the triage and the events' tags "
                         "depend on it")
    notes = []
    if candidate.names != current.names:
        if not allow_new_classes:
            raise ModelError(f"candidate {candidate.path} has other classes than the running model: candidate "
                             f"[{', '.join(candidate.names)}], running [{', '.join(current.names)}]; class ids must "
                             "mean the same (retrain with the running model's classes, in its order), or give "
                             "--allow-new-classes to change the classes the agent detects (--val then holds the "
                             "candidate's classes)")
        notes.append(f"new classes (--allow-new-classes): [{', '.join(current.names)}] -> "
                     f"[{', '.join(candidate.names)}]; the running model is not compared")
    if candidate.precision == "int8" and candidate.gate_state != "passed":
        if require_gate:
            raise ModelError(f"{candidate.gate_detail} (model.require_gate is on: the agent would refuse it)")
        notes.append(f"warning: {candidate.gate_detail}; promoting it anyway (model.require_gate is off)")
    return notes


# -- evaluation ----------------------------------------------------------------------------------------------


def _read_dataset(val: pathlib.Path, split: str, task: str, names: tuple[str, ...]) -> Any:
    from agent.tooling.evaluation.classify_dataset import read_classify_dataset
    from agent.tooling.evaluation.dataset import read_yolo_dataset

    if task == "classify":
        return read_classify_dataset(val, split, names=names)
    dataset = read_yolo_dataset(val, split, names=names)
    for note in dataset.notes:
        typer.echo(f"note: {note}", err=True)
    return dataset


def evaluate_model(role: str, summary: ModelSummary, dataset: Any, band: TriageConfig, threads: int,
                   out_dir: pathlib.Path) -> ModelScore:
    """Run one model over the held-out set; its ``models eval`` report goes to ``out_dir``."""
    from agent.config.models import ModelConfig
    from agent.core.detections import PrefilterResult
    from agent.prefilter.classifier import ImageClassifier
    from agent.prefilter.factory import open_prefilter
    from agent.tooling.evaluation.classify_dataset import evaluate_classifier, triage_summary
    from agent.tooling.evaluation.classify_report import ClassifyEvalContext, write_classification_report
    from agent.tooling.evaluation.dataset import evaluate_detector
    from agent.tooling.evaluation.promotion import ModelScore
    from agent.tooling.evaluation.report import EvalContext, write_detection_report
    from agent.tooling.quantize.workflow import progress_printer
    from agent.triage.policy import decide

    path = summary.path
    model = open_prefilter(path, ModelConfig(path=path, min_score=_EVAL_MIN_SCORE, iou_threshold=_EVAL_IOU,
                                             max_detections=_EVAL_MAX_DET, intra_op_threads=threads))
    results: list[PrefilterResult] = []
    seen: list[tuple[str, PrefilterResult]] = []

    def record(item: Any, result: PrefilterResult) -> None:
        results.append(result)
        if isinstance(model, ImageClassifier):
            seen.append((dataset.names[item.class_id], result))

    label = f"evaluate {role} ({summary.model_id})"
    started = _now()
    if isinstance(model, ImageClassifier):
        cm = evaluate_classifier(model, dataset, progress_printer(label), record)
        metrics = {"accuracy": cm.accuracy, "macro F1": cm.macro_f1}
        per_class: dict[str, float | None] = {c.name: c.f1 if c.support else None for c in cm.classes}
        prep = model.info.classifier_input
        latency = statistics.median(r.latency_ms for r in results)
        ctx = ClassifyEvalContext(
            model_id=summary.model_id, model_path=path.resolve(), dataset=dataset.source.resolve(),
            split=dataset.split, started=started, finished=_now(), input_size=(model.info.input_w, model.info.input_h),
            preprocessing={} if prep is None else {
                "resize": prep.resize, "interpolation": prep.interpolation, "mean": list(prep.normalisation.mean),
                "std": list(prep.normalisation.std), "output": prep.output},
            triage=triage_summary(seen, band), latency_p50_ms=latency)
        report = write_classification_report(out_dir, cm, ctx).html
        per_class_metric = "F1"
    else:
        dm = evaluate_detector(model, dataset, model.info.names, progress_printer(label), record)
        metrics = {"mAP50": dm.map50, "mAP50-95": dm.map50_95, "precision": dm.precision, "recall": dm.recall}
        per_class = {c.name: c.ap50 for c in dm.classes}
        latency = statistics.median(r.latency_ms for r in results)
        ctx_d = EvalContext(model_id=summary.model_id, model_path=path.resolve(), dataset=dataset.source.resolve(),
                            split=dataset.split, min_score=_EVAL_MIN_SCORE, nms_iou=_EVAL_IOU,
                            max_detections=_EVAL_MAX_DET, started=started, finished=_now(),
                            input_size=(model.info.input_w, model.info.input_h))
        report = write_detection_report(out_dir, dm, ctx_d).html
        per_class_metric = "AP50"
    return ModelScore(role=role, model_id=summary.model_id, path=path, sha256=summary.sha256,
                      precision=summary.precision, metrics=metrics, per_class=per_class,
                      per_class_metric=per_class_metric, verdicts=tuple(decide(r, band).verdict for r in results),
                      latency_p50_ms=latency, report=report)


# -- the running agent -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Agent:
    request: ReloadRequest
    health_url: str | None
    no_health: str  # why health_url is None


def _find_agent(target: AgentTarget, cfg: AgentConfig) -> _Agent | None:
    """How to reach the running agent (None with --no-reload); EdgeAgentError when it cannot be found."""
    from agent.ops.control import SignalReload, SystemdReload, check_agent_pid, find_agent_pid, health_url

    if not target.reload:
        return None
    request: ReloadRequest
    if target.unit is not None:
        request = SystemdReload(target.unit)
    elif target.pid is not None:
        check_agent_pid(target.pid, "--pid")
        request = SignalReload(target.pid, "--pid")
    else:
        pid, where = find_agent_pid(target.pid_file, os.environ)
        request = SignalReload(pid, where)
    url, why = (target.health, "") if target.health else health_url(cfg.metrics)
    return _Agent(request, url, why)


def _agent_notes(agent: _Agent | None, running: str) -> list[str]:
    """Warnings when /healthz does not answer, or says the agent runs something else than model.path."""
    from agent.ops.control import HealthProbe

    if agent is None or agent.health_url is None:
        return []
    now = HealthProbe(agent.health_url).read()
    if now is None:
        return [f"warning: the agent's {agent.health_url} does not answer; the reload cannot be confirmed "
                "(give --health URL if it listens elsewhere)"]
    if now.model_id != running:
        return [f"warning: the agent at {agent.health_url} runs {now.model_id}, not {running} (the model at "
                "model.path): another config, or a file changed without a reload?"]
    return []


def _reload(agent: _Agent, expected: str, wait_s: float) -> tuple[ReloadOutcome | None, str]:
    """Ask the agent to reload and watch it: (outcome, a line to print); outcome None when it cannot be seen."""
    from agent.ops.control import HealthProbe, wait_for_model

    probe = HealthProbe(agent.health_url) if agent.health_url else None
    before: HealthSnapshot | None = probe.read() if probe is not None else None
    agent.request.send()
    if probe is None:
        return None, (f"reload requested ({agent.request.describe()}); not verified: {agent.no_health}. Check the "
                      f"agent's log for 'model file changed on disk, reloaded'")
    outcome = wait_for_model(probe.read, expected, before, wait_s)
    return outcome, f"reload ({agent.request.describe()}): {outcome.detail}"


@contextlib.contextmanager
def _store(model_path: pathlib.Path, keep: int) -> Iterator[ModelStore]:
    from agent.prefilter.store import ModelStore

    try:
        store = ModelStore(model_path, keep=keep)
    except ValueError as exc:
        raise EdgeAgentError(f"--keep: {exc}") from None
    with store.locked():
        yield store


def _swap_and_reload(store: ModelStore, saved: StoredModel | None, new_files: Any, expected: str,
                     agent: _Agent | None, wait_s: float, no_reload: str = "--no-reload") -> tuple[int, str]:
    """Install ``new_files`` over the model (``saved`` holds what ran; None: there was no file), reload,
    verify. (exit code, reload state for the log). A refused reload puts ``saved`` back."""
    store.install(new_files)
    kept = f"previous kept in {saved.folder}" if saved is not None else "there was no file before"
    typer.echo(f"installed: {store.model_path} is now {expected} ({kept})")
    if agent is None:
        typer.echo(f"not reloaded ({no_reload}): the agent loads the new model at its next SIGHUP or start")
        return 0, "not requested"
    try:
        outcome, line = _reload(agent, expected, wait_s)
    except EdgeAgentError as exc:
        typer.echo(f"edge-agent: error: {exc}; the new files stay in place (roll back with "
                   "`edge-agent models rollback`)", err=True)
        return EXIT_RELOAD_FAILED, "request failed"
    if outcome is None:
        typer.echo(line)
        return 0, "not verified"
    if outcome.ok:
        typer.echo(line)
        return 0, outcome.state
    typer.echo(f"edge-agent: error: {line}", err=True)
    if outcome.state == "refused" and saved is not None:
        store.install(saved.files())
        typer.echo(f"put back {saved.model_id} at {store.model_path} (the agent still runs it)", err=True)
    else:
        typer.echo("the new files stay in place; check the agent (`edge-agent doctor`, its log), or roll back "
                   "with `edge-agent models rollback`", err=True)
    return EXIT_RELOAD_FAILED, outcome.state


# -- promote --------------------------------------------------------------------------------------------------


def _report_dir(opts: PromoteOptions, started: datetime.datetime) -> pathlib.Path:
    if opts.report is not None:
        return opts.report
    folder = opts.candidate if opts.candidate.is_dir() else opts.candidate.parent
    return folder / f"promotion-{started.strftime('%Y%m%dT%H%M%SZ')}"


def run_promote(opts: PromoteOptions) -> int:
    from agent.prefilter.store import InstalledFiles
    from agent.tooling.evaluation.promotion import (
        judge_class_change,
        judge_promotion,
        metric_key,
        promotion_document,
        write_promotion_report,
    )
    from agent.tooling.models import inspect_model

    cfg = _load(opts.config)
    target = _model_path(cfg, opts.config)
    current = inspect_model(target) if target.is_file() else None
    if current is None:  # a learning line's first model (_model_path checked that no camera inspects)
        candidate_path, how = resolve_first_candidate(opts.candidate)
    else:
        candidate_path, how = resolve_candidate(opts.candidate, current)
    if how:
        typer.echo(f"candidate: {how}", err=True)
    candidate = inspect_model(candidate_path)
    notes = check_candidate(current, candidate, cfg.model.require_gate, opts.allow_new_classes) if current else \
        check_first_candidate(candidate, cfg.model.require_gate)
    class_change = current is None or candidate.names != current.names
    task = candidate.task if current is None else current.task
    key = metric_key(opts.metric, task)
    if not -1.0 <= opts.margin <= 1.0:
        raise EdgeAgentError(f"--margin {opts.margin:g}: expected a difference of the metric in -1..1 (0.01 = one "
                             "point; negative asks the candidate to be better by that much)")
    # before the slow part: an agent that cannot be reached fails now; an agent whose cameras all learn runs
    # no model, so there is nothing to reload into it (the cameras start inspecting when their mode changes)
    agent = _find_agent(opts.target, cfg) if cfg.needs_model else None
    if current is not None:
        notes += _agent_notes(agent, current.model_id)
    dataset = _read_dataset(opts.val, opts.split, task, candidate.names)  # the same names unless they change
    if not dataset.images:
        raise EdgeAgentError(f"--val {opts.val} has no images in split '{opts.split}'; the gate needs labelled images")
    for note in notes:
        typer.echo(note, err=True)
    started = _now()
    out_dir = _report_dir(opts, started)
    roles = (("candidate", candidate),) if current is None or class_change else \
        (("current", current), ("candidate", candidate))
    scores = [evaluate_model(role, summary, dataset, cfg.triage, opts.threads, out_dir / role)
              for role, summary in roles]
    before, after = (None, scores[0]) if class_change else (scores[0], scores[1])
    decision = (judge_class_change(key, after.metrics[key], current.names if current else (), candidate.names)
                if before is None else judge_promotion(key, before.metrics[key], after.metrics[key], opts.margin))
    data_desc = f"{opts.val} (split {opts.split})"
    doc = promotion_document(decision, before, after, task=task, dataset=data_desc,
                             images=len(dataset.images), model_path=target, created=started,
                             notes=(how, *notes) if how else tuple(notes))
    files = write_promotion_report(out_dir, doc, before, after)
    for s in scores:
        typer.echo(f"{s.role + ':':<10} {s.model_id} ({s.precision}): "
                   + ", ".join(f"{k} {v:.4f}" for k, v in s.metrics.items()))
    typer.echo(decision.numbers())
    if before is not None:
        typer.echo(f"frame verdicts (triage) differ on {doc['verdicts_changed']} of {len(dataset.images)} images")
    typer.echo(f"report: {files.html}")
    if not decision.accepted:
        running = current.model_id if current else "no model (its cameras learn)"
        typer.echo(f"REFUSED: {decision.reason}. The agent keeps running {running}; nothing was changed.", err=True)
        typer.echo(f"refused on {decision.numbers()}", err=True)
        return EXIT_REFUSED
    typer.echo(f"accepted: {decision.reason}")
    expected = f"{target.stem}@{candidate.sha256[:12]}"
    with _store(target, opts.keep) as store:
        saved = _save_current(store, current, candidate, target)
        code, reload_state = _swap_and_reload(store, saved, InstalledFiles.of(candidate.path), expected, agent,
                                              opts.target.wait_s, "--no-reload" if cfg.needs_model else
                                              "no camera inspects")
        if not cfg.needs_model:
            typer.echo(f"every camera of {opts.config} is in learn mode, so no agent runs this model yet: set "
                       "mode: inspect (or remove mode: learn) in the config and reload the agent (SIGHUP, or "
                       "systemctl reload) to inspect with it")
        if reload_state == "refused" and saved is not None:
            store.drop(saved)  # it is the installed model again
        store.prune()
        store.append_log({
            "at": _now().isoformat(timespec="seconds"), "action": "promote", "model_path": str(target),
            "from": None if current is None or saved is None else {
                "model_id": current.model_id, "sha256": current.sha256, "stored": str(saved.folder)},
            "to": {"model_id": expected, "sha256": candidate.sha256, "source": str(candidate.path)},
            "decision": decision.as_json(), "metrics": {"current": dict(before.metrics) if before else None,
                                                        "candidate": dict(after.metrics)},
            "validation": {"data": data_desc, "images": len(dataset.images)}, "report": str(files.html),
            "reload": reload_state, "reverted": reload_state == "refused",
        })
    return code


# -- rollback --------------------------------------------------------------------------------------------------


def run_rollback(opts: RollbackOptions) -> int:
    from agent.prefilter.model_info import file_digest

    cfg = _load(opts.config)
    target = cfg.model.path
    with _store(target, opts.keep) as store:
        entry = store.latest("replaced")
        if entry is None:
            raise EdgeAgentError(f"nothing to roll back: the model store {store.root} holds no earlier model of "
                                 f"{target.name} (each `edge-agent models promote` keeps the one it replaces)")
        store.verify(entry)
        agent = _find_agent(opts.target, cfg)
        if target.is_file() and file_digest(target) == entry.sha256:
            raise EdgeAgentError(f"{target} already is {entry.model_id}, the newest model in the store "
                                 f"({entry.folder}); nothing to roll back to")
        typer.echo(f"rolling back to {entry.model_id}, kept {entry.saved_at} ({entry.note})")
        saved = store.save_installed("rolled_back", f"rolled back to {entry.model_id}") if target.is_file() else None
        code, reload_state = _swap_and_reload(store, saved, entry.files(), entry.model_id, agent, opts.target.wait_s)
        if reload_state == "refused" and saved is not None:
            store.drop(saved)  # the rolled-back model is installed again; the entry stays for a later try
        else:
            store.drop(entry)  # it is the installed model now
        store.prune()
        store.append_log({
            "at": _now().isoformat(timespec="seconds"), "action": "rollback", "model_path": str(target),
            "from": None if saved is None else {"model_id": saved.model_id, "sha256": saved.sha256,
                                                "stored": str(saved.folder)},
            "to": {"model_id": entry.model_id, "sha256": entry.sha256, "saved_at": entry.saved_at},
            "reload": reload_state, "reverted": reload_state == "refused",
        })
    return code
