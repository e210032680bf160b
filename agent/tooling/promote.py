"""``edge-agent models promote`` and ``edge-agent models rollback``: put a retrained model into the running
agent behind an accuracy gate, and take it back out.

promote CANDIDATE --config CONFIG --val DIR:

1. read the config; the model it runs is ``model.path`` (the *current* model);
2. pick the candidate file (CANDIDATE is an ONNX file, or a folder written by ``edge-agent models train``:
   see :func:`agent.tooling.candidates.resolve_candidate`); refuse one of another task, with other classes
   (in another order too: class ids must mean the same) unless ``--allow-new-classes``, the very same file, or, with
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

Steps 1-2 are :func:`_pick` (the candidate's checks: :mod:`agent.tooling.candidates`), 4 :func:`_judge`, 5-6
:func:`_install` (the running agent and the store: :mod:`agent.tooling.reload`).

Exit codes: 0 done; 1 the gate refused the candidate; 2 bad input (nothing changed); 3 the files were
replaced but the agent did not confirm the reload (refused: the files are put back; no answer: they stay).
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
import statistics
from typing import TYPE_CHECKING, Any

import typer

from agent.errors import EdgeAgentError, ModelError
from agent.tooling.candidates import check_candidate, check_first_candidate, resolve_candidate, resolve_first_candidate
from agent.tooling.reload import RunningAgent, agent_notes, find_agent, model_store, swap_and_reload

if TYPE_CHECKING:
    from agent.config.models import AgentConfig, TriageConfig
    from agent.prefilter.store import ModelStore, StoredModel
    from agent.tooling.evaluation.promotion import ModelScore, PromotionDecision
    from agent.tooling.models import ModelSummary

EXIT_REFUSED = 1
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


# -- evaluation ----------------------------------------------------------------------------------------------


def _read_dataset(val: pathlib.Path, split: str, task: str, names: tuple[str, ...]) -> Any:
    from agent.tooling.evaluation.anomaly_val import read_anomaly_valset
    from agent.tooling.evaluation.classify_dataset import read_classify_dataset
    from agent.tooling.evaluation.dataset import read_yolo_dataset

    if task == "classify":
        return read_classify_dataset(val, split, names=names)
    if task == "anomaly":
        return read_anomaly_valset(val, split)
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
    if summary.task == "anomaly":
        return _evaluate_anomaly(role, summary, dataset, band, threads, out_dir)
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


def _evaluate_anomaly(role: str, summary: ModelSummary, dataset: Any, band: TriageConfig, threads: int,
                      out_dir: pathlib.Path) -> ModelScore:
    """An anomaly model over the held-out set: image AUROC (the gate's metric), the numbers at its threshold."""
    from agent.config.models import ModelConfig
    from agent.prefilter.anomaly import AnomalyModel
    from agent.prefilter.factory import open_prefilter
    from agent.tooling.evaluation.anomaly_dataset import evaluate_anomaly
    from agent.tooling.evaluation.anomaly_report import anomaly_eval_document, write_anomaly_report
    from agent.tooling.evaluation.anomaly_val import has_boxes
    from agent.tooling.evaluation.promotion import ModelScore
    from agent.tooling.quantize.workflow import progress_printer

    model = open_prefilter(summary.path, ModelConfig(path=summary.path, intra_op_threads=threads))
    if not isinstance(model, AnomalyModel):
        raise ModelError(f"{summary.path}: its metadata says task anomaly but it did not load as an anomaly model")
    ev = evaluate_anomaly(model, dataset, band, progress_printer(f"evaluate {role} ({summary.model_id})"),
                          pixels=has_boxes(dataset))
    if ev.image_auroc is None:
        raise EdgeAgentError(f"--val {dataset.source}: no image AUROC (it needs good and defective images)")
    files = write_anomaly_report(out_dir, anomaly_eval_document(ev, summary.model_id, str(dataset.source),
                                                                dataset.split))
    at = ev.at_model_threshold
    metrics = {"image AUROC": ev.image_auroc, "false-reject rate": at.false_reject_rate}
    if at.recall is not None:
        metrics["recall"] = at.recall
    if at.precision is not None:
        metrics["precision"] = at.precision
    if ev.pixel_auroc is not None:
        metrics["pixel AUROC"] = ev.pixel_auroc
    return ModelScore(role=role, model_id=summary.model_id, path=summary.path, sha256=summary.sha256,
                      precision=summary.precision, metrics=metrics, per_class={}, per_class_metric="AUROC",
                      verdicts=ev.verdicts, latency_p50_ms=statistics.median(ev.latencies_ms), report=files[-1])


# -- promote --------------------------------------------------------------------------------------------------


def _report_dir(opts: PromoteOptions, started: datetime.datetime) -> pathlib.Path:
    if opts.report is not None:
        return opts.report
    folder = opts.candidate if opts.candidate.is_dir() else opts.candidate.parent
    return folder / f"promotion-{started.strftime('%Y%m%dT%H%M%SZ')}"


@dataclasses.dataclass(frozen=True)
class _Candidate:
    """What is promoted over what: the files, the checks' notes, and the metric it is judged on."""

    target: pathlib.Path  # model.path
    current: ModelSummary | None  # None: a learning line's first model
    candidate: ModelSummary
    how: str  # which file of a candidate folder was taken, and why ("" for a file)
    notes: list[str]
    task: str
    key: str

    @property
    def class_change(self) -> bool:
        return self.current is None or self.candidate.names != self.current.names


@dataclasses.dataclass(frozen=True)
class _Judged:
    decision: PromotionDecision
    before: ModelScore | None
    after: ModelScore
    data_desc: str
    images: int
    report: pathlib.Path


def _pick(opts: PromoteOptions, cfg: AgentConfig) -> _Candidate:
    """Steps 1-2: the current model and the candidate, checked; EdgeAgentError when it cannot be promoted."""
    from agent.tooling.evaluation.promotion import metric_key
    from agent.tooling.models import inspect_model

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
    task = candidate.task  # a task change (--allow-new-classes) is judged on the candidate's metric
    key = metric_key(opts.metric, task)
    if not -1.0 <= opts.margin <= 1.0:
        raise EdgeAgentError(f"--margin {opts.margin:g}: expected a difference of the metric in -1..1 (0.01 = one "
                             "point; negative asks the candidate to be better by that much)")
    return _Candidate(target, current, candidate, how, notes, task, key)


def _judge(opts: PromoteOptions, cfg: AgentConfig, picked: _Candidate, dataset: Any) -> _Judged:
    """Step 4: evaluate (the candidate alone when the classes change), judge, write the report, say it."""
    from agent.tooling.evaluation.promotion import promotion_document, write_promotion_report

    current, candidate = picked.current, picked.candidate
    started = _now()
    out_dir = _report_dir(opts, started)
    roles = (("candidate", candidate),) if current is None or picked.class_change else \
        (("current", current), ("candidate", candidate))
    scores = [evaluate_model(role, summary, dataset, cfg.triage, opts.threads, out_dir / role)
              for role, summary in roles]
    before, after = (None, scores[0]) if picked.class_change else (scores[0], scores[1])
    decision = _decide(picked, dataset, before, after, opts.margin)
    data_desc = f"{opts.val} (split {opts.split})"
    doc = promotion_document(decision, before, after, task=picked.task, dataset=data_desc,
                             images=len(dataset.images), model_path=picked.target, created=started,
                             notes=(picked.how, *picked.notes) if picked.how else tuple(picked.notes))
    files = write_promotion_report(out_dir, doc, before, after)
    for s in scores:
        typer.echo(f"{s.role + ':':<10} {s.model_id} ({s.precision}): "
                   + ", ".join(f"{k} {v:.4f}" for k, v in s.metrics.items()))
    typer.echo(decision.numbers())
    if before is not None:
        typer.echo(f"frame verdicts (triage) differ on {doc['verdicts_changed']} of {len(dataset.images)} images")
    typer.echo(f"report: {files.html}")
    return _Judged(decision, before, after, data_desc, len(dataset.images), files.html)


def _decide(picked: _Candidate, dataset: Any, before: ModelScore | None, after: ModelScore, margin: float
            ) -> PromotionDecision:
    """Compare with the running model; or, where none of this task ran, judge the candidate against its floor."""
    from agent.tooling.evaluation.promotion import (
        class_prior,
        judge_class_change,
        judge_new_anomaly,
        judge_promotion,
    )

    current, candidate, key = picked.current, picked.candidate, picked.key
    if before is not None:
        return judge_promotion(key, before.metrics[key], after.metrics[key], margin)
    if picked.task == "anomaly" and (current is None or current.task != "anomaly") and key == "image AUROC":
        return judge_new_anomaly(after.metrics[key], after.metrics["false-reject rate"],
                                 None if current is None else f"a {current.task} model")
    prior = class_prior(key, [im.class_id for im in dataset.images], candidate.names) \
        if picked.task == "classify" else None
    return judge_class_change(key, after.metrics[key], current.names if current else (), candidate.names, prior)


def _install(opts: PromoteOptions, cfg: AgentConfig, picked: _Candidate, judged: _Judged,
             agent: RunningAgent | None) -> int:
    """Steps 5-6: keep the current model, install the candidate, reload and watch; log it in the store."""
    from agent.prefilter.store import InstalledFiles

    target, current, candidate = picked.target, picked.current, picked.candidate
    expected = f"{target.stem}@{candidate.sha256[:12]}"
    with model_store(target, opts.keep) as store:
        saved = _save_current(store, current, candidate, target)
        code, reload_state = swap_and_reload(store, saved, InstalledFiles.of(candidate.path), expected, agent,
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
            "decision": judged.decision.as_json(),
            "metrics": {"current": dict(judged.before.metrics) if judged.before else None,
                        "candidate": dict(judged.after.metrics)},
            "validation": {"data": judged.data_desc, "images": judged.images}, "report": str(judged.report),
            "reload": reload_state, "reverted": reload_state == "refused",
        })
    return code


def run_promote(opts: PromoteOptions) -> int:
    cfg = _load(opts.config)
    picked = _pick(opts, cfg)
    # before the slow part: an agent that cannot be reached fails now; an agent whose cameras all learn runs
    # no model, so there is nothing to reload into it (the cameras start inspecting when their mode changes)
    agent = find_agent(opts.target, cfg) if cfg.needs_model else None
    notes = list(picked.notes)
    if picked.current is not None:
        notes += agent_notes(agent, picked.current.model_id)
    # the same names unless they change
    dataset = _read_dataset(opts.val, opts.split, picked.task, picked.candidate.names)
    if not dataset.images:
        raise EdgeAgentError(f"--val {opts.val} has no images in split '{opts.split}'; the gate needs labelled images")
    for note in notes:
        typer.echo(note, err=True)
    picked = dataclasses.replace(picked, notes=notes)
    judged = _judge(opts, cfg, picked, dataset)
    if not judged.decision.accepted:
        running = picked.current.model_id if picked.current else "no model (its cameras learn)"
        typer.echo(f"REFUSED: {judged.decision.reason}. The agent keeps running {running}; nothing was changed.",
                   err=True)
        typer.echo(f"refused on {judged.decision.numbers()}", err=True)
        return EXIT_REFUSED
    typer.echo(f"accepted: {judged.decision.reason}")
    return _install(opts, cfg, picked, judged, agent)


# -- rollback --------------------------------------------------------------------------------------------------


def run_rollback(opts: RollbackOptions) -> int:
    from agent.prefilter.model_info import file_digest

    cfg = _load(opts.config)
    target = cfg.model.path
    with model_store(target, opts.keep) as store:
        entry = store.latest("replaced")
        if entry is None:
            raise EdgeAgentError(f"nothing to roll back: the model store {store.root} holds no earlier model of "
                                 f"{target.name} (each `edge-agent models promote` keeps the one it replaces)")
        store.verify(entry)
        agent = find_agent(opts.target, cfg)
        if target.is_file() and file_digest(target) == entry.sha256:
            raise EdgeAgentError(f"{target} already is {entry.model_id}, the newest model in the store "
                                 f"({entry.folder}); nothing to roll back to")
        typer.echo(f"rolling back to {entry.model_id}, kept {entry.saved_at} ({entry.note})")
        saved = store.save_installed("rolled_back", f"rolled back to {entry.model_id}") if target.is_file() else None
        code, reload_state = swap_and_reload(store, saved, entry.files(), entry.model_id, agent, opts.target.wait_s)
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
