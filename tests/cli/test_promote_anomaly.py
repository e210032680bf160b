"""``edge-agent models promote`` of an anomaly model (real processes, real ONNX models): the line's first model
judged on a held-out set the VLM labelled (an image-folder export: ``val/pass/`` good, every other class folder
defective) by its image AUROC against chance, with the false-reject rate stated; a task change from a running
classifier only when asked (``--allow-new-classes``); a held-out set without defects named.

The candidate is tests/prefilter/onnx_builders.py's brightness model (its score is the brightest 4x4 cell): on
dark frames a white square is an anomaly, so it separates the set below perfectly, and is blind to a dark one.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil

import cv2
import numpy as np
import pytest

from agent.config.models import REPO_MODELS
from tests.cli.test_models_cli import assert_fails_cleanly
from tests.cli.test_promote_cli import promote
from tests.prefilter.onnx_builders import brightness_anomaly_model

LEARNING = ("model: {path: models/line.onnx}\nmode: learn\nescalation: {gateway: '127.0.0.1:1'}\n"
            "cameras: [{id: line3, source: 'synthetic://surface'}]\n")


def vlm_export(root: pathlib.Path, *, good: int = 12, defective: int = 8, square: int = 255) -> pathlib.Path:
    """An image-folder dataset as ``dataset export --format imagefolder`` writes it: dark noisy frames in
    ``val/pass/``; in ``val/scratch/`` the same with a 16-pixel square of brightness ``square``."""
    rng = np.random.default_rng(4)
    for split in ("train", "val"):
        for name, count in (("pass", good), ("scratch", defective)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(10, 60, (64, 64, 3), dtype=np.uint8)
                if name == "scratch":
                    x, y = rng.integers(0, 48, 2)
                    image[y:y + 16, x:x + 16] = square
                cv2.imwrite(str(folder / f"{i:03d}.jpg"), image)
    (root / "dataset.json").write_text(json.dumps({"task": "classify", "names": ["pass", "scratch"]}))
    (root / "export.json").write_text(json.dumps({"pass_class": "pass", "format": "imagefolder"}))
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return brightness_anomaly_model(tmp_path_factory.mktemp("anomaly") / "bright.onnx",
                                    metadata={"threshold": "0.6"})


def test_a_first_anomaly_model_is_judged_on_auroc_against_chance_and_installed(
        tmp_path: pathlib.Path, model: pathlib.Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(LEARNING)
    val = vlm_export(tmp_path / "data")
    proc = promote(model, config, val, "--report", str(tmp_path / "report"))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "evaluate candidate" in proc.stderr and "evaluate current" not in proc.stderr
    assert re.search(r"^accepted: candidate image AUROC 1\.0000 \(chance 0\.5\); at its threshold it rejects "
                     r"0\.0% of the held-out good frames; the line's first model, an anomaly model",
                     proc.stdout, re.M), proc.stdout
    assert "refused at or below 0.6000, chance (0.5) + 0.1" in proc.stdout
    assert (tmp_path / "models" / "line.onnx").read_bytes() == model.read_bytes()
    doc = json.loads((tmp_path / "report" / "promotion.json").read_text())
    assert doc["decision"]["accepted"] and doc["decision"]["metric"] == "image AUROC"
    assert doc["decision"]["threshold"] == pytest.approx(0.6)
    evaluated = json.loads((tmp_path / "report" / "candidate" / "eval.json").read_text())
    assert evaluated["images"] == 20 and evaluated["defective"] == 8, evaluated


def test_an_anomaly_model_no_better_than_chance_is_refused_and_nothing_is_installed(
        tmp_path: pathlib.Path, model: pathlib.Path) -> None:
    """Defects the model cannot see (a square as dark as the surface): AUROC about 0.5, refused with the numbers."""
    config = tmp_path / "agent.yaml"
    config.write_text(LEARNING)
    val = vlm_export(tmp_path / "data", square=35)
    proc = promote(model, config, val)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^REFUSED: candidate image AUROC 0\.[0-6]\d* is not better than chance \(0\.5\) by 0\.1: its "
                     r"score does not yet tell good frames from defective ones", proc.stderr, re.M), proc.stderr
    assert "keeps running no model (its cameras learn)" in proc.stderr
    assert not (tmp_path / "models" / "line.onnx").exists()


def test_a_held_out_set_without_defects_or_without_the_pass_folder_is_named(
        tmp_path: pathlib.Path, model: pathlib.Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(LEARNING)
    val = vlm_export(tmp_path / "data")
    shutil.rmtree(val / "val" / "scratch")
    assert_fails_cleanly(promote(model, config, val), "no defective ones; an anomaly model's gate (image AUROC) "
                                                      "needs both good and defective held-out images")
    (val / "val" / "pass").rename(val / "val" / "good")
    (val / "export.json").unlink()
    (val / "dataset.json").unlink()
    assert_fails_cleanly(promote(model, config, val), "no 'pass' class folder in val/ (classes good)")
    assert not (tmp_path / "models" / "line.onnx").exists()


def test_a_task_change_from_a_running_classifier_needs_allow_new_classes(
        tmp_path: pathlib.Path, model: pathlib.Path) -> None:
    (tmp_path / "models").mkdir()
    shutil.copyfile(REPO_MODELS / "conveyor-resnet-cls.int8.onnx", tmp_path / "models" / "line.onnx")
    config = tmp_path / "agent.yaml"
    config.write_text("model: {path: models/line.onnx}\ncameras: [{id: line3, source: 'synthetic://surface'}]\n")
    val = vlm_export(tmp_path / "data")
    refused = promote(model, config, val, "--no-reload")
    assert_fails_cleanly(refused, "is a anomaly model; the running model")
    assert "unless you give --allow-new-classes" in refused.stderr

    proc = promote(model, config, val, "--no-reload", "--allow-new-classes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "task change (--allow-new-classes): classify -> anomaly" in proc.stderr
    assert "the task changes from a classify model to an anomaly model (--allow-new-classes)" in proc.stdout
    assert (tmp_path / "models" / "line.onnx").read_bytes() == model.read_bytes()
