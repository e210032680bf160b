"""Day zero, no labels, end to end: ``scripts/day_zero.py`` with its default settings (the anomaly prefilter), the
run whose numbers docs/new-line.md gives.

A grey surface line (``synthetic://surface``) with no model and no label: ``edge-agent gateway`` with the
plant's taxonomy in front of the simulated VLM (the fake Ollama answering from the scene's ground truth, wrong
on 5% of the frames: a stated simulation), ``edge-agent run`` in learn mode (the answers published and
recorded), ``dataset export --format imagefolder``, ``models train --task anomaly`` on the frames the VLM called
pass (INT8 behind its gate), ``models promote`` (the line's first model, judged on image AUROC on the export's
val split as the VLM labelled it), then ``edge-agent run`` inspecting frames never seen (another seed) with the
promoted anomaly model and ``triage.anomaly``, escalating what it is unsure about to the VLM, which names the
defect. Every step is the CLI as a subprocess; Mosquitto and the gRPC gateway are real. The script runs once
for the module (about 25 minutes on this shared 2-core box, the training 17.5 of them); needs the train extra.

* ``test_the_loop_runs_end_to_end_with_our_commands``: every step succeeds; learn mode inspected only what it
  sent; the fresh run published every frame it took once, with the promoted model, and every escalated frame
  was answered; the frames the VLM decided are as right as the simulation makes them (F1 >= ``VLM_F1``); the
  cascade: the prefilter tags ``anomaly``, the VLM names the defects.
* ``test_the_prefilter_decides_most_frames_and_beats_the_stated_f1``: issue #16's goal. Measured with the
  anomaly model this script promotes: 72.3% of the fresh frames decided by the prefilter, F1 0.858
  (docs/new-line.md, with how it was measured). The classifier path (``--prefilter classify``, not run here)
  decided 0%, 31.5% and 5.2% in three runs and does not meet it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.train, pytest.mark.timeout(4000)]

PREFILTER_SHARE = 0.5  # goal: the prefilter decides more than half of the fresh frames
MIN_F1 = 0.80  # goal: pass/defect F1 (defect positive) of the final verdicts on the fresh frames
VLM_F1 = 0.85  # the simulated VLM (5% wrong) on the frames it decided: about 0.95 measured

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def numbers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("torch", reason="needs the train extra: pip install -e '.[train]'")
    root = tmp_path_factory.mktemp("day-zero")
    out = root / "numbers.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "day_zero.py"), "--work", str(root / "work"),
                           "--json", str(out)], capture_output=True, text=True, timeout=3900, env=env)
    print(done.stdout[-6000:])
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


def test_the_loop_runs_end_to_end_with_our_commands(numbers: dict[str, Any]) -> None:
    learn, fresh = numbers["learn"], numbers["fresh"]
    # before: only the sampled frames were inspected, each by the (simulated, 5% wrong) VLM
    assert learn["answered"] == learn["published"] > 100, learn
    assert learn["taken"] == numbers["settings"]["learn_frames"] > learn["published"], learn
    assert numbers["simulation"]["error_rate"] == 0.05 and numbers["simulation"]["wrong"] > 0
    assert learn["f1"] >= VLM_F1, learn
    exported = numbers["export"]
    assert sum(exported["train"].values()) + sum(exported["val"].values()) == learn["answered"], exported
    assert set(exported["train"]) == {"pass", "scratch", "pit", "stain", "crack", "inclusion", "dent"}
    if not numbers["promote"]["accepted"]:
        # a first model no better than chance (anomaly: image AUROC) or the most common class (classifier) is
        # refused; the cameras keep learning and there is no fresh run
        reason = numbers["promote"]["reason"]
        assert "not better than chance" in reason or "most common class" in reason, numbers["promote"]
        assert fresh["events"] == fresh["inspected"] == 0, fresh
        return
    # after: every frame taken was inspected and published once, by the promoted model; every escalation answered
    assert fresh["events"] == fresh["inspected"] >= 0.9 * fresh["frames"], fresh
    assert len(fresh["models"]) == 1 and fresh["models"][0].startswith("line3@"), fresh["models"]
    assert set(fresh["statuses"]) <= {"not_needed", "answered"}, fresh["statuses"]
    assert fresh["escalated"] == fresh["statuses"].get("answered", 0)
    assert fresh["escalated"] + fresh["decided_by_prefilter"] == fresh["events"], fresh
    assert fresh["vlm_f1"] >= VLM_F1 or fresh["escalated"] < 20, fresh
    if numbers["settings"]["prefilter"] == "anomaly":
        # the cascade: the anomaly model tags only `anomaly`; the VLM names the defect of the frames it is asked
        # about (a label of the plant's taxonomy on nearly every one it calls defective)
        assert set(fresh["prefilter_labels"]) <= {"anomaly"}, fresh["prefilter_labels"]
        assert fresh["vlm_defects_named"] >= 0.9 * fresh["vlm_defects"], fresh


def test_the_prefilter_decides_most_frames_and_beats_the_stated_f1(numbers: dict[str, Any]) -> None:
    fresh = numbers["fresh"]
    assert fresh["prefilter_share"] >= PREFILTER_SHARE, fresh
    assert fresh["f1"] >= MIN_F1, fresh
