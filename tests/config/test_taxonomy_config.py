"""``taxonomy:`` in the agent's config: read with the config, checked by ``edge-agent config check``."""

from __future__ import annotations

import pathlib
import shutil
import textwrap

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.loader import check_config, load_config
from agent.config.reload import plan_reload
from agent.taxonomy import Mapped

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "systemd" / "taxonomy.example.yaml"

CONFIG = """\
device_id: box1
model:
  path: model.onnx
taxonomy: {taxonomy}
"""

CONFLICTING = """\
version: 1
labels:
  - label: DENT
    code: D-1
    severity: low
    synonyms: [ding]
  - label: DEFORMATION
    code: D-2
    severity: medium
    synonyms: [bend, Ding]
"""


def write(folder: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_taxonomy_is_read_relative_to_the_config_file(tmp_path: pathlib.Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "plant.yaml")
    config = load_config(write(tmp_path, "agent.yaml", CONFIG.format(taxonomy="plant.yaml")), env={})
    assert config.taxonomy == tmp_path / "plant.yaml"
    assert config.loaded_taxonomy is not None
    assert config.loaded_taxonomy.map("Missing_Piece") == Mapped("MISSING_PART", "D-301", "critical")
    # copies (the batch command's and a reload's) keep it
    assert config.model_copy(update={"device_id": "box2"}).loaded_taxonomy == config.loaded_taxonomy


def test_no_taxonomy_means_none(tmp_path: pathlib.Path) -> None:
    config = load_config(write(tmp_path, "agent.yaml", "device_id: box1\n"), env={})
    assert config.taxonomy is None and config.loaded_taxonomy is None


def test_a_bad_taxonomy_is_a_config_problem_with_file_field_and_line(tmp_path: pathlib.Path) -> None:
    taxonomy = write(tmp_path, "plant.yaml", CONFLICTING)
    problems = check_config(write(tmp_path, "agent.yaml", CONFIG.format(taxonomy="plant.yaml")), env={})
    assert problems == [
        f"taxonomy ({taxonomy}): labels[1].synonyms[1] (line 10): synonym 'Ding' of DEFORMATION is already a "
        "synonym of DENT (labels[0].synonyms[0]); a word can map to one canonical label only"]


def test_a_missing_taxonomy_file_is_named(tmp_path: pathlib.Path) -> None:
    problems = check_config(write(tmp_path, "agent.yaml", CONFIG.format(taxonomy="gone.yaml")), env={})
    assert problems == [f"taxonomy ({tmp_path / 'gone.yaml'}): {tmp_path / 'gone.yaml'}: no such taxonomy file"]


def test_the_environment_can_name_the_taxonomy(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(EXAMPLE, tmp_path / "plant.yaml")
    monkeypatch.chdir(tmp_path)  # relative to the working directory, like model.path from an override
    config = load_config(None, env={"EDGE_AGENT_TAXONOMY": "plant.yaml"})
    assert config.loaded_taxonomy is not None and config.loaded_taxonomy.map("rust") is not None


def test_config_check_prints_the_taxonomy_problems(tmp_path: pathlib.Path) -> None:
    taxonomy = write(tmp_path, "plant.yaml", CONFLICTING.replace("severity: medium", "severity: awful"))
    config = write(tmp_path, "agent.yaml", CONFIG.format(taxonomy="plant.yaml"))
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 1, result.output
    assert f"taxonomy ({taxonomy}): labels[1].severity (line 9): Input should be 'low', 'medium', 'high' or " \
           "'critical' (got 'awful')" in result.output
    shutil.copy(EXAMPLE, tmp_path / "plant.yaml")
    # config check opens the model too: a real one where the config names it
    shutil.copy(pathlib.Path(__file__).parents[2] / "models" / "conveyor-yolov8n.int8.onnx", tmp_path / "model.onnx")
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 0 and result.output.strip().endswith("agent.yaml: ok"), result.output


def test_a_reload_applies_a_new_taxonomy(tmp_path: pathlib.Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "plant.yaml")
    write(tmp_path, "other.yaml", "labels:\n  - {label: HOLE, code: H-1, severity: high}\n")
    running = load_config(write(tmp_path, "a.yaml", CONFIG.format(taxonomy="plant.yaml")), env={})
    new = load_config(write(tmp_path, "b.yaml", CONFIG.format(taxonomy="other.yaml")), env={})
    plan = plan_reload(running, new)
    assert "taxonomy" in plan.live and not plan.needs_restart
    assert plan.config.taxonomy == tmp_path / "other.yaml"
    assert plan.config.loaded_taxonomy is not None and plan.config.loaded_taxonomy.map("hole") == Mapped(
        "HOLE", "H-1", "high")
