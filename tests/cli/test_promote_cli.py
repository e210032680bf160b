"""``edge-agent models promote`` and ``models rollback`` as a user runs them (real processes, real models),
with ``--no-reload``: the gate, the candidate rules, the store and the round trip. The live swap in a running
agent is tests/test_service_promote.py.

The worse candidate is a real, different model: the shipped detector with one class's score bias pushed
to -30 by graph surgery (tests/prefilter/model_surgery.py), a detector blind to scratches. On the held-out
set its mAP50 is about a quarter lower; the gate must refuse it and print the numbers.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
from collections.abc import Callable

import onnx
import pytest

from agent.config.models import DEFAULT_MODEL, DEFAULT_PREFILTER, REPO_MODELS
from agent.prefilter.model_info import file_digest
from agent.tooling.dataset.synth import write_synthetic_dataset
from tests.cli.test_models_cli import assert_fails_cleanly, edge_agent
from tests.prefilter.model_surgery import blind_detector, renamed_classes

NUMBERS = re.compile(r"^mAP50: current (?P<cur>[\d.]+), candidate (?P<cand>[\d.]+), difference (?P<diff>[-+][\d.]+), "
                     r"margin (?P<margin>-?[\d.]+) \(refused below (?P<below>-?[\d.]+)\)$", re.M)


@pytest.fixture(scope="module")
def val_set(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("val") / "heldout"
    write_synthetic_dataset(root, 1, 30, seed=21)  # seed 21: not the shipped detector's training stream (7)
    return root


@pytest.fixture(scope="module")
def blind(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The shipped FP32 detector, blind to class 0 (scratch)."""
    return blind_detector(tmp_path_factory.mktemp("blind") / "blind-scratch.onnx", 0)


def install(tmp_path: pathlib.Path, model: pathlib.Path, *sidecars: tuple[pathlib.Path, str]) -> pathlib.Path:
    """A config whose model.path is a copy of ``model`` (``sidecars``: (file, name beside it)); returns it."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copyfile(model, folder / "detector.onnx")
    for source, name in sidecars:
        shutil.copyfile(source, folder / name)
    config = tmp_path / "agent.yaml"
    config.write_text("model: {path: models/detector.onnx}\ncameras: [{id: belt, source: 'synthetic://conveyor'}]\n")
    return config


def candidate_folder(tmp_path: pathlib.Path, files: dict[str, pathlib.Path]) -> pathlib.Path:
    """A folder as `edge-agent models train` writes it: name -> source file."""
    folder = tmp_path / "candidate"
    folder.mkdir()
    for name, source in files.items():
        shutil.copyfile(source, folder / name)
    return folder


def promote(candidate: pathlib.Path, config: pathlib.Path, val: pathlib.Path,
            *extra: str) -> subprocess.CompletedProcess[str]:
    proc = edge_agent("models", "promote", str(candidate), "--config", str(config), "--val", str(val), *extra,
                      timeout=180)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def tree(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_worse_candidate_is_refused_with_the_numbers_and_nothing_changes(
        tmp_path: pathlib.Path, val_set: pathlib.Path, blind: pathlib.Path) -> None:
    config = install(tmp_path, DEFAULT_MODEL)
    models = tmp_path / "models"
    before = tree(models)
    candidate = shutil.copyfile(blind, tmp_path / "blind-scratch.onnx")
    proc = promote(candidate, config, val_set, "--no-reload", "--report", str(tmp_path / "report"))

    assert proc.returncode == 1, proc.stderr  # refused by the gate: not 2 (bad input)
    numbers = NUMBERS.search(proc.stdout)
    assert numbers is not None, proc.stdout
    cur, cand, diff = float(numbers["cur"]), float(numbers["cand"]), float(numbers["diff"])
    assert numbers["margin"] == "0.0100" and abs(float(numbers["below"]) - (cur - 0.01)) < 1e-3
    assert abs(diff - (cand - cur)) < 2e-4 and cur - cand > 0.15  # blind to one class of four: about -0.25
    refusal = next(line for line in proc.stderr.splitlines() if line.startswith("REFUSED: "))
    assert f"candidate mAP50 {cand:.4f} is {cur - cand:.4f} below the current model's {cur:.4f}; the margin allows " \
           "at most 0.0100" in refusal and "nothing was changed" in refusal
    assert f"refused on mAP50: current {cur:.4f}, candidate {cand:.4f}" in proc.stderr
    # the numbers are those of the two evaluation reports (the `models eval` report of each model)
    current_eval = json.loads((tmp_path / "report" / "current" / "eval.json").read_text())
    candidate_eval = json.loads((tmp_path / "report" / "candidate" / "eval.json").read_text())
    assert round(current_eval["metrics"]["mAP50"], 4) == cur and round(candidate_eval["metrics"]["mAP50"], 4) == cand
    scratch = next(c for c in candidate_eval["classes"] if c["name"] == "scratch")
    assert scratch["gt_count"] > 0 and scratch["ap50"] == 0.0  # it really cannot see scratches
    doc = json.loads((tmp_path / "report" / "promotion.json").read_text())
    assert doc["schema"] == "edge-agent/promotion/1" and doc["decision"]["accepted"] is False
    assert doc["validation"]["images"] == 30 and doc["candidate"]["per_class"]["classes"]["scratch"] == 0.0
    html = (tmp_path / "report" / "promotion.html").read_text()
    assert "Refused" in html and 'href="current/report.html"' in html and 'href="candidate/report.html"' in html
    # nothing was touched: same files, no store
    assert tree(models) == before and not (models / ".history").exists()


def test_a_better_candidate_is_swapped_in_and_rollback_restores_every_byte(
        tmp_path: pathlib.Path, val_set: pathlib.Path, blind: pathlib.Path) -> None:
    card = tmp_path / "blind.md"
    card.write_text("# blind-scratch\n\nthe weakened starting detector\n")
    config = install(tmp_path, blind, (card, "detector.md"))
    models = tmp_path / "models"
    before = tree(models)
    folder = candidate_folder(tmp_path, {"conveyor.onnx": DEFAULT_MODEL,
                                         "conveyor.md": DEFAULT_MODEL.with_suffix(".md")})
    proc = promote(folder, config, val_set, "--no-reload")

    assert proc.returncode == 0, proc.stderr
    assert "candidate: conveyor.onnx from the candidate folder (the running model is FP32)" in proc.stderr
    numbers = NUMBERS.search(proc.stdout)
    assert numbers is not None and float(numbers["diff"]) > 0.15, proc.stdout
    assert "accepted: candidate mAP50" in proc.stdout and "not reloaded (--no-reload)" in proc.stdout
    # the files at model.path are the candidate's (its card installed under the model's name)
    assert (models / "detector.onnx").read_bytes() == DEFAULT_MODEL.read_bytes()
    assert (models / "detector.md").read_bytes() == DEFAULT_MODEL.with_suffix(".md").read_bytes()
    report = re.search(r"^report: (.+)$", proc.stdout, re.M)
    assert report is not None and pathlib.Path(report[1]).parent.parent == folder  # next to the candidate
    # the store holds the previous model and its card; the log says what happened
    entries = [p for p in (models / ".history").iterdir() if p.is_dir()]
    assert len(entries) == 1 and entries[0].name.endswith("-" + file_digest(blind)[:12])
    assert tree(entries[0]) | {"entry.json": b""} == before | {"entry.json": b""}
    log = [json.loads(line) for line in (models / ".history" / "promotions.jsonl").read_text().splitlines()]
    assert [r["action"] for r in log] == ["promote"]
    assert log[0]["from"]["sha256"] == file_digest(blind) and log[0]["to"]["sha256"] == file_digest(DEFAULT_MODEL)
    assert log[0]["decision"]["accepted"] and log[0]["reload"] == "not requested"

    back = edge_agent("models", "rollback", "--config", str(config), "--no-reload")
    assert back.returncode == 0, back.stderr
    assert f"rolling back to detector@{file_digest(blind)[:12]}" in back.stdout
    assert tree(models) == before  # every byte, and no card left behind from the candidate
    kinds = [json.loads((p / "entry.json").read_text())["kind"] for p in (models / ".history").iterdir()
             if p.is_dir()]
    assert kinds == ["rolled_back"]  # the candidate is kept for inspection, never restored by a rollback

    again = edge_agent("models", "rollback", "--config", str(config), "--no-reload")
    assert_fails_cleanly(again, "nothing to roll back: the model store")


def test_a_candidate_folder_gives_its_int8_file_when_the_agent_runs_int8(
        tmp_path: pathlib.Path, val_set: pathlib.Path) -> None:
    config = install(tmp_path, DEFAULT_PREFILTER, (DEFAULT_PREFILTER.with_suffix(".gate.json"), "detector.gate.json"))
    # another INT8 file (same weights, another description): it has no gate record of its own
    int8 = onnx.load(str(DEFAULT_PREFILTER))
    int8.doc_string = "retrained candidate"
    onnx.save(int8, str(tmp_path / "int8.onnx"))
    folder = candidate_folder(tmp_path, {"conveyor.onnx": DEFAULT_MODEL, "conveyor.int8.onnx": tmp_path / "int8.onnx"})

    # model.require_gate: an INT8 candidate without a passing gate record is refused before any evaluation
    (tmp_path / "strict.yaml").write_text(config.read_text().replace(
        "model: {path: models/detector.onnx}", "model: {path: models/detector.onnx, require_gate: true}"))
    refused = promote(folder, tmp_path / "strict.yaml", val_set, "--no-reload")
    assert_fails_cleanly(refused, "has no accuracy gate record (conveyor.int8.gate.json)")
    assert "model.require_gate is on" in refused.stderr and "evaluate" not in refused.stderr

    # without it: a warning, and the INT8 file is the one evaluated and installed
    proc = promote(folder, config, val_set, "--no-reload")
    assert proc.returncode == 0, proc.stderr
    assert "candidate: conveyor.int8.onnx from the candidate folder (the running model is INT8, cpu flavour)" \
        in proc.stderr
    assert "warning: INT8 model" in proc.stderr and "promoting it anyway (model.require_gate is off)" in proc.stderr
    numbers = NUMBERS.search(proc.stdout)
    assert numbers is not None and float(numbers["diff"]) == 0.0  # the same weights score the same
    installed = tmp_path / "models"
    assert (installed / "detector.onnx").read_bytes() == (tmp_path / "int8.onnx").read_bytes()
    assert not (installed / "detector.gate.json").exists()  # the old record would be stale: it goes to the store

    # a folder without the INT8 file: refused, with the way to run FP32 instead
    (folder / "conveyor.int8.onnx").unlink()
    missing = promote(folder, config, val_set, "--no-reload")
    assert_fails_cleanly(missing, f"has no conveyor.int8.onnx (did its INT8 gate refuse it?); promote "
                                  f"{folder / 'conveyor.onnx'} to run the FP32 model instead")
    # with the candidate.json `models train` writes: its FP32 file is the one (another .onnx lies there too),
    # and what it says of the INT8 file is in the message
    shutil.copyfile(DEFAULT_MODEL, folder / "earlier-try.onnx")
    (folder / "candidate.json").write_text(json.dumps({"files": {"fp32": "conveyor.onnx"},
                                                       "int8": "refused by the gate"}))
    missing = promote(folder, config, val_set, "--no-reload")
    assert_fails_cleanly(missing, "has no conveyor.int8.onnx (candidate.json says: INT8 refused by the gate); "
                                  f"promote {folder / 'conveyor.onnx'} to run")


@pytest.mark.parametrize(("make", "message"), [
    # another task: the classifier over the detector
    (lambda d: shutil.copyfile(REPO_MODELS / "conveyor-resnet-cls.int8.onnx", d / "classifier.onnx"),
     "is a classify model; the running model"),
    # the same detector whose metadata names another fourth class
    (lambda d: renamed_classes(d / "renamed.onnx", {0: "scratch", 1: "hole", 2: "stain", 3: "dent"}),
     "has other classes than the running model: candidate [scratch, hole, stain, dent], running "
     "[scratch, hole, stain, missing]"),
    # the very file that runs
    (lambda d: shutil.copyfile(DEFAULT_MODEL, d / "same.onnx"), "is the model the agent already runs"),
])
def test_a_candidate_that_cannot_replace_the_model_is_refused_clearly(
        tmp_path: pathlib.Path, val_set: pathlib.Path, make: Callable[[pathlib.Path], object], message: str) -> None:
    config = install(tmp_path, DEFAULT_MODEL)
    before = tree(tmp_path / "models")
    candidate = make(tmp_path)
    proc = promote(pathlib.Path(str(candidate)), config, val_set, "--no-reload")
    assert_fails_cleanly(proc, message)
    assert tree(tmp_path / "models") == before


def test_bad_input_is_named(tmp_path: pathlib.Path, val_set: pathlib.Path, blind: pathlib.Path) -> None:
    config = install(tmp_path, DEFAULT_MODEL)
    cases = [
        (("--metric", "accuracy", "--no-reload"), "--metric accuracy is a classify metric but the model is a detect"),
        (("--margin", "2", "--no-reload"), "--margin 2: expected a difference of the metric in -1..1"),
        (("--wait", "0"), "--wait 0: expected a positive number of seconds"),
        # no agent is running and no pid file exists: said before anything is evaluated
        ((), "no running agent found: no pid file at"),
    ]
    for extra, message in cases:
        proc = promote(blind, config, val_set, *extra)
        assert_fails_cleanly(proc, message)
        assert "evaluate" not in proc.stderr
    empty = tmp_path / "empty"
    (empty / "images" / "val").mkdir(parents=True)
    (empty / "labels" / "val").mkdir(parents=True)
    assert_fails_cleanly(promote(blind, config, empty, "--no-reload"), "no images in split 'val'")
    assert_fails_cleanly(promote(tmp_path / "nope.onnx", config, val_set, "--no-reload"),
                         "candidate " + str(tmp_path / "nope.onnx") + " does not exist")
    folder = candidate_folder(tmp_path, {"a.onnx": DEFAULT_MODEL, "b.onnx": blind})
    assert_fails_cleanly(promote(folder, config, val_set, "--no-reload"), "expected one FP32 model <name>.onnx")
    (tmp_path / "models" / "detector.onnx").unlink()
    assert_fails_cleanly(promote(blind, config, val_set, "--no-reload"), "there is no running model to compare")
    assert_fails_cleanly(edge_agent("models", "rollback", "--config", str(config), "--no-reload"),
                         "nothing to roll back")


def test_a_classifier_is_judged_on_accuracy(tmp_path: pathlib.Path) -> None:
    from agent.tooling.dataset.synth import write_classify_dataset

    shipped = REPO_MODELS / "conveyor-resnet-cls.int8.onnx"
    val = tmp_path / "frames"
    write_classify_dataset(val, 1, 12, seed=21)
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copyfile(shipped, folder / "classifier.onnx")
    config = tmp_path / "agent.yaml"
    config.write_text("model: {path: models/classifier.onnx}\ncameras: [{id: belt, source: 'synthetic://conveyor'}]\n")
    retrained = onnx.load(str(shipped))  # the same weights in another file: it must score the same
    retrained.doc_string = "retrained candidate"
    onnx.save(retrained, str(tmp_path / "candidate.onnx"))

    wrong = promote(tmp_path / "candidate.onnx", config, val, "--metric", "map50", "--no-reload")
    assert_fails_cleanly(wrong, "--metric map50 is a detect metric but the model is a classify model")
    proc = promote(tmp_path / "candidate.onnx", config, val, "--metric", "macro-f1", "--no-reload")
    assert proc.returncode == 0, proc.stderr
    line = re.search(r"^macro F1: current ([\d.]+), candidate ([\d.]+), difference \+0\.0000, margin 0\.0100",
                     proc.stdout, re.M)
    assert line is not None and line[1] == line[2], proc.stdout
    assert "frame verdicts (triage) differ on 0 of" in proc.stdout
    report = re.search(r"^report: (.+)$", proc.stdout, re.M)
    assert report is not None
    doc = json.loads(pathlib.Path(report[1]).with_name("promotion.json").read_text())
    assert doc["task"] == "classify" and doc["decision"]["metric"] == "macro F1"
    assert set(doc["current"]["metrics"]) == {"accuracy", "macro F1"} and doc["current"]["per_class"]["metric"] == "F1"
    evaluated = json.loads((pathlib.Path(report[1]).parent / "candidate" / "eval.json").read_text())
    assert evaluated["model"]["task"] == "classify" and evaluated["triage"] is not None
    assert (folder / "classifier.onnx").read_bytes() == (tmp_path / "candidate.onnx").read_bytes()


@pytest.mark.parametrize("named", ["../outside.onnx", "/etc/outside.onnx", "sub/conveyor.onnx", ".."])
def test_candidate_json_names_files_in_its_folder_only(tmp_path: pathlib.Path, named: str) -> None:
    from agent.errors import ModelError
    from agent.tooling.candidates import resolve_candidate
    from agent.tooling.models import inspect_model

    shutil.copyfile(DEFAULT_MODEL, tmp_path / "outside.onnx")  # what ../outside.onnx would reach
    folder = candidate_folder(tmp_path, {"conveyor.onnx": DEFAULT_MODEL})
    (folder / "candidate.json").write_text(json.dumps({"files": {"fp32": named}}))
    with pytest.raises(ModelError, match=re.escape(f"candidate.json files.fp32 {named!r} is not a file name in the "
                                                   "folder (a path is not followed)")):
        resolve_candidate(folder, inspect_model(DEFAULT_MODEL))
    # a base name is taken
    (folder / "candidate.json").write_text(json.dumps({"files": {"fp32": "conveyor.onnx"}}))
    assert resolve_candidate(folder, inspect_model(DEFAULT_MODEL))[0] == folder / "conveyor.onnx"


def test_new_classes_are_promoted_only_when_asked_and_judged_on_their_own_held_out_set(
        tmp_path: pathlib.Path, val_set: pathlib.Path) -> None:
    config = install(tmp_path, DEFAULT_MODEL)
    models = tmp_path / "models"
    before = tree(models)
    renamed = renamed_classes(tmp_path / "renamed.onnx", {0: "scratch", 1: "hole", 2: "stain", 3: "dent"})
    assert_fails_cleanly(promote(renamed, config, val_set, "--no-reload"),
                         "or give --allow-new-classes to change the classes the agent detects")
    assert tree(models) == before
    val = tmp_path / "heldout-dent"  # the candidate's held-out set: its class names
    shutil.copytree(val_set, val)
    yaml_text = (val / "data.yaml").read_text().replace(str(val_set.resolve()), str(val.resolve()))
    (val / "data.yaml").write_text(yaml_text.replace("missing", "dent"))
    proc = promote(renamed, config, val, "--no-reload", "--allow-new-classes", "--report", str(tmp_path / "report"))

    assert proc.returncode == 0, proc.stderr
    assert ("new classes (--allow-new-classes): [scratch, hole, stain, missing] -> [scratch, hole, stain, dent]; the "
            "running model is not compared") in proc.stderr
    assert "evaluate current" not in proc.stderr and "evaluate candidate" in proc.stderr
    match = re.search(r"^mAP50: candidate ([\d.]+) \(new classes", proc.stdout, re.M)
    assert match is not None and float(match[1]) > 0.5, proc.stdout
    doc = json.loads((tmp_path / "report" / "promotion.json").read_text())
    assert doc["current"] is None and doc["verdicts_changed"] is None
    assert doc["decision"]["accepted"] and doc["decision"]["current"] is None
    assert "(--allow-new-classes)" in doc["decision"]["reason"]
    assert "not evaluated" in (tmp_path / "report" / "promotion.html").read_text()
    assert (models / "detector.onnx").read_bytes() == renamed.read_bytes()
    log = [json.loads(line) for line in (models / ".history" / "promotions.jsonl").read_text().splitlines()]
    assert log[-1]["metrics"]["current"] is None and log[-1]["action"] == "promote"


def test_a_class_change_that_finds_none_of_its_classes_is_refused() -> None:
    from agent.tooling.evaluation.promotion import judge_class_change

    refused = judge_class_change("mAP50", 0.0, ("scratch",), ("pit",))
    assert not refused.accepted and "finds none of its classes" in refused.reason
    assert refused.as_json()["current"] is None and refused.as_json()["difference"] is None
    accepted = judge_class_change("mAP50", 0.42, ("scratch",), ("pit",))
    assert accepted.accepted and accepted.numbers().startswith("mAP50: candidate 0.4200 (new classes")


def test_a_learning_lines_first_model_is_installed_at_model_path_and_the_cameras_keep_learning(
        tmp_path: pathlib.Path, val_set: pathlib.Path) -> None:
    """Day zero: every camera learns (``mode: learn``) and ``model.path`` names where the line's model goes, with
    no file there yet. Only the candidate is evaluated; it is installed; no agent is asked to reload (none runs
    a model), and the output says to switch the cameras to inspect."""
    config = tmp_path / "agent.yaml"
    config.write_text("model: {path: models/line.onnx}\nmode: learn\n"
                      "escalation: {gateway: '127.0.0.1:1'}\n"
                      "cameras: [{id: line3, source: 'synthetic://surface'}]\n")
    renamed = renamed_classes(tmp_path / "renamed.onnx", {0: "scratch", 1: "hole", 2: "stain", 3: "dent"})
    val = tmp_path / "heldout-dent"  # the candidate's held-out set: its class names
    shutil.copytree(val_set, val)
    yaml_text = (val / "data.yaml").read_text().replace(str(val_set.resolve()), str(val.resolve()))
    (val / "data.yaml").write_text(yaml_text.replace("missing", "dent"))
    # (no --no-reload: there is no agent to find, and promote does not look for one when no camera inspects)
    proc = promote(renamed, config, val, "--allow-new-classes", "--report", str(tmp_path / "report"))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "first model: every camera learns and model.path does not exist yet" in proc.stderr
    assert "evaluate current" not in proc.stderr and "evaluate candidate" in proc.stderr
    assert "the line's first model, classes [scratch, hole, stain, dent]" in proc.stdout, proc.stdout
    assert re.search(r"^mAP50: candidate [\d.]+ \(the line's first model: there is no running model, not compared; "
                     r"refused at or below 0\)$", proc.stdout, re.M), proc.stdout
    assert "not reloaded (no camera inspects)" in proc.stdout
    assert "set mode: inspect (or remove mode: learn) in the config and reload the agent" in proc.stdout
    assert (tmp_path / "models" / "line.onnx").read_bytes() == renamed.read_bytes()
    log = [json.loads(line) for line in (tmp_path / "models" / ".history" / "promotions.jsonl").read_text()
           .splitlines()]
    assert log[-1]["from"] is None and log[-1]["to"]["sha256"] == file_digest(renamed)
    doc = json.loads((tmp_path / "report" / "promotion.json").read_text())
    assert doc["current"] is None and doc["decision"]["accepted"]
    # nothing to roll back to: the first model has no predecessor
    assert_fails_cleanly(edge_agent("models", "rollback", "--config", str(config), "--no-reload"),
                         "nothing to roll back")


def test_a_first_classifier_no_better_than_the_class_prior_is_refused_and_the_cameras_keep_learning(
        tmp_path: pathlib.Path) -> None:
    """A learning line's first classifier must beat always answering the held-out set's most common class. Here
    every held-out image is filed under one class (the prior's accuracy is 1.0): no classifier can beat that, the
    promotion is refused with the numbers, and nothing is installed."""
    from agent.tooling.dataset.synth import write_classify_dataset

    val = tmp_path / "frames"
    write_classify_dataset(val, 1, 6, seed=22)
    names = sorted(p.name for p in (val / "val").iterdir())
    for other in names[1:]:
        for image in (val / "val" / other).iterdir():
            image.rename(val / "val" / names[0] / f"{other}-{image.name}")
    config = tmp_path / "agent.yaml"
    config.write_text("model: {path: models/line.onnx}\nmode: learn\nescalation: {gateway: '127.0.0.1:1'}\n"
                      "cameras: [{id: line3, source: 'synthetic://conveyor'}]\n")
    proc = promote(REPO_MODELS / "conveyor-resnet-cls.int8.onnx", config, val, "--allow-new-classes", "--metric",
                   "accuracy", "--report", str(tmp_path / "report"))

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^REFUSED: candidate accuracy [\d.]+ is no better than always answering the held-out set's "
                     r"most common class \(accuracy 1\.0000\): it has learnt nothing yet; the line's first model",
                     proc.stderr, re.M), proc.stderr
    assert "refused at or below 1.0000, the class prior" in proc.stderr
    assert "keeps running no model (its cameras learn)" in proc.stderr
    assert not (tmp_path / "models" / "line.onnx").exists()
    doc = json.loads((tmp_path / "report" / "promotion.json").read_text())
    assert not doc["decision"]["accepted"] and doc["decision"]["threshold"] == 1.0


def test_a_config_with_no_model_names_no_place_to_install_and_the_shipped_model_is_untouched(
        tmp_path: pathlib.Path, val_set: pathlib.Path) -> None:
    """``model: null`` (every camera learns): its model.path would be the shipped detector's default; promote
    refuses and says how to name the line's model file, and the shipped models are not touched."""
    config = tmp_path / "agent.yaml"
    config.write_text("model: null\nescalation: {gateway: '127.0.0.1:1'}\n"
                      "cameras: [{id: line3, source: 'synthetic://surface'}]\n")
    shipped = {p.name: file_digest(p) for p in REPO_MODELS.glob("*.onnx")}
    proc = promote(DEFAULT_MODEL, config, val_set, "--allow-new-classes", "--no-reload")
    assert_fails_cleanly(proc, "has no model (model: null: every camera learns), so there is no model.path to "
                               "install the candidate at")
    assert "model: {path: /var/lib/edge-agent/models/line3.onnx}" in proc.stderr
    assert {p.name: file_digest(p) for p in REPO_MODELS.glob("*.onnx")} == shipped
    assert not (REPO_MODELS / ".history").exists()
