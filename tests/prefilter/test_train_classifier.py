"""scripts/train_classifier.py: the network is ResNet-18's layout, and a tiny run end to end gives a model the
agent opens (needs the train extra; skipped without torch)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

from agent.prefilter.classifier import ImageClassifier
from agent.prefilter.factory import open_prefilter
from agent.tooling.dataset.synth import CLASSIFY_NAMES

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "train_classifier.py"

pytestmark = pytest.mark.train


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("train_classifier", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_width_64_is_torchvision_resnet18() -> None:
    torch = pytest.importorskip("torch", reason="needs the train extra (pip install -e '.[train]')")
    models = pytest.importorskip("torchvision.models", reason="needs the train extra (pip install -e '.[train]')")
    script = _script()

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(script.build_net(64, 5, "avg")) == count(models.resnet18(weights=None, num_classes=5))
    narrow = script.build_net(16, 5)
    assert 0.6e6 < count(narrow) < 0.8e6  # a 16th of resnet18's 11.7 M, give or take the stem and the head
    with torch.no_grad():
        assert narrow.eval()(torch.zeros(1, 3, 192, 256)).shape == (1, 5)


def test_tiny_training_run_exports_a_model_the_agent_runs(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("torch", reason="needs the train extra (pip install -e '.[train]')")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--train", "12", "--val", "6", "--epochs", "1", "--patch-epochs", "1",
         "--patch-size", "32", "--width", "4", "--batch", "4",
         "--imgsz", "48", "64", "--workdir", str(tmp_path / "work"), "--models", str(tmp_path / "models"),
         "--name", "tiny-cls"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = tmp_path / "models" / "tiny-cls.onnx"
    clf = open_prefilter(model)
    assert isinstance(clf, ImageClassifier) and clf.info.names == CLASSIFY_NAMES
    assert (clf.info.input_w, clf.info.input_h) == (64, 48)
    record = json.loads((tmp_path / "work" / "record.json").read_text())
    assert record["train_images"] == 12 and [e["phase"] for e in record["history"]] == ["patches", "frames"]
    assert 0 <= record["metrics"]["accuracy"] <= 1
    card = (tmp_path / "models" / "tiny-cls.md").read_text()
    reproduce = card.split("## Reproduce")[1]
    assert "--train 12 --val 6 --epochs 1 --imgsz 48 64 --width 4 --batch 4" in reproduce
    assert "--patch-epochs 1 --patch-size 32" in reproduce
    assert "--name tiny-cls" in reproduce and "--workdir" not in reproduce
