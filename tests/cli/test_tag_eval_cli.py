"""``edge-agent tag --labels``: the finished output scored against ground truth, as a user runs it (a real
process, the shipped model, a real gateway in front of the fake Ollama answering from the truth)."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from agent.capture.synthetic import DEFECT_CLASSES
from agent.tooling.dataset.synth import write_synthetic_dataset
from tests.cli.test_cli import assert_no_traceback, edge_agent
from tests.fakes.gateway import GatewayThread, gateway_config
from tests.fakes.ollama import FakeOllama
from tests.fakes.vlm_oracle import TruthOracle

N_VAL = 10


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("eval") / "synth"
    write_synthetic_dataset(out, n_train=1, n_val=N_VAL, seed=42)
    return out


def tag(*args: str) -> subprocess.CompletedProcess[str]:
    proc = edge_agent("tag", *args, timeout=120)
    assert_no_traceback(proc)
    return proc


def test_labels_with_a_gateway_scores_three_strategies_and_writes_the_report(
        data: pathlib.Path, tmp_path: pathlib.Path) -> None:
    oracle = TruthOracle.from_yolo(data / "images" / "val", data / "labels" / "val", DEFECT_CLASSES)
    with FakeOllama(answer_fn=oracle) as fake:
        gateway = GatewayThread(gateway_config(fake.url)).start()
        try:
            config = tmp_path / "agent.yaml"
            config.write_text(f"escalation:\n  gateway: {gateway.address}\n")
            out = tmp_path / "tags.jsonl"
            proc = tag(str(data / "images" / "val"), "--out", str(out), "--config", str(config),
                       "--labels", str(data / "labels"))
            chats = [r for r in fake.chat_requests() if r.body.get("messages")]
        finally:
            gateway.stop(grace=0)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    escalated = sum(r["escalation"]["status"] != "not_needed" for r in records)
    assert len(chats) == escalated + N_VAL  # the cascade's questions, then one about every image
    doc = json.loads((tmp_path / "tags-eval" / "cascade-eval.json").read_text())
    assert doc["images"] == {"items": N_VAL, "evaluated": N_VAL, "unlabelled": 0}
    strategies = doc["strategies"]
    assert set(strategies) == {"prefilter", "cascade", "vlm"}
    assert strategies["prefilter"]["escalation_rate"] == 0.0
    assert strategies["cascade"]["escalation_rate"] == pytest.approx(escalated / N_VAL)
    assert strategies["vlm"]["escalation_rate"] == 1.0
    # an oracle without errors: the VLM on every image is right about every image and class
    assert strategies["vlm"]["defect"]["f1"] in (1.0, None)
    assert all(c["f1"] in (1.0, None) for c in strategies["vlm"]["classes"].values())
    assert set(strategies["cascade"]["classes"]) == set(DEFECT_CLASSES)
    html = (tmp_path / "tags-eval" / "cascade-report.html").read_text()
    assert "VLM on every image" in html and "data:image/png;base64," in html
    assert (tmp_path / "tags-eval" / "cascade-f1.png").read_bytes().startswith(b"\x89PNG")
    for name in ("prefilter alone", "cascade", "VLM on every image"):
        assert name in proc.stderr


def test_labels_without_a_gateway_and_a_csv_file(data: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """A CSV label file (one row per class, ``pass`` for a good image); no gateway: VLM not run."""
    rows = ["image,label"]
    for label in sorted((data / "labels" / "val").glob("*.txt")):
        ids = sorted({int(line.split()[0]) for line in label.read_text().splitlines() if line.strip()})
        rows += [f"{label.stem}.jpg,{DEFECT_CLASSES[i]}" for i in ids] or [f"{label.stem}.jpg,pass"]
    csv_file = tmp_path / "truth.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    out = tmp_path / "tags.csv"
    proc = tag(str(data / "images" / "val"), "--out", str(out), "--labels", str(csv_file),
               "--report", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "rep" / "cascade-eval.json").read_text())
    assert doc["strategies"]["vlm"] == {"title": "VLM on every image", "run": False,
                                        "reason": "no escalation.gateway in the config"}
    # no gateway: the cascade leaves uncertain items to the prefilter rule, so both score the same
    assert doc["strategies"]["cascade"]["defect"] == doc["strategies"]["prefilter"]["defect"]
    assert "not run" in proc.stderr


def test_labels_whose_classes_are_not_the_models_are_refused(data: pathlib.Path, tmp_path: pathlib.Path) -> None:
    csv_file = tmp_path / "truth.csv"
    csv_file.write_text("image,label\n000000.jpg,dent\n000001.jpg,pass\n000002.jpg,crack\n")
    out = tmp_path / "tags.jsonl"
    proc = tag(str(data / "images" / "val"), "--out", str(out), "--labels", str(csv_file))
    assert proc.returncode == 2
    assert "'dent' (line 2)" in proc.stderr and "'crack' (line 4)" in proc.stderr
    assert not out.exists()

    labels = tmp_path / "yolo" / "labels"
    labels.mkdir(parents=True)
    (labels / "000000.txt").write_text("")
    (labels.parent / "data.yaml").write_text("names:\n  0: scratch\n  1: dent\n")
    proc = tag(str(data / "images" / "val"), "--out", str(out), "--labels", str(labels))
    assert proc.returncode == 2
    assert "not the model's: dent" in proc.stderr
    assert not out.exists()
