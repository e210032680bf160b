"""The `dataset:` section and `cameras[].record`: validation, `edge-agent config check`, reload."""

from __future__ import annotations

import pathlib
import textwrap

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.loader import check_config, load_config
from agent.config.models import AgentConfig
from agent.config.reload import plan_reload
from agent.dataset.recorder import ModelRef, open_recorder

GATEWAY = "escalation: {gateway: '127.0.0.1:50051'}\n"


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_recording_is_off_by_default_and_opens_nothing(tmp_path: pathlib.Path) -> None:
    config = AgentConfig()
    assert not any(config.records(cam) for cam in config.cameras)
    assert open_recorder(config, lambda: ModelRef("m", None, "detect", ("a",)), env={"HOME": str(tmp_path)}) is None
    assert not (tmp_path / ".local").exists()


def test_a_camera_overrides_the_default_and_the_folder_is_relative_to_the_config_file(
        tmp_path: pathlib.Path) -> None:
    config = load_config(write(tmp_path, GATEWAY + textwrap.dedent("""\
        dataset: {dir: rec, record: true, max_frames: 10}
        cameras:
          - {id: a, source: "synthetic://conveyor"}
          - {id: b, source: "synthetic://conveyor", record: false}
        """)), env={})
    assert [config.records(cam) for cam in config.cameras] == [True, False]
    assert config.dataset.dir == tmp_path / "rec"
    recorder = open_recorder(config, lambda: ModelRef("m", None, "detect", ("a",)))
    assert recorder is not None and recorder.cameras == {"a"}
    assert (tmp_path / "rec" / "records").is_dir() and recorder.store.max_frames == 10


@pytest.mark.parametrize(("text", "problem"), [
    # recording without a gateway: nothing could ever be answered
    ("cameras: [{id: a, source: 'synthetic://conveyor', record: true}]\n",
     "dataset recording is on for camera(s) a (dataset.record / cameras[].record) but escalation.gateway is not "
     "set"),
    # bounds
    (GATEWAY + "dataset: {max_frames: 0}\n", "dataset.max_frames (line 2): Input should be greater than or equal to 1"),
    (GATEWAY + "dataset: {confident_sample: 1.5}\n", "dataset.confident_sample (line 2): Input should be less than or "
     "equal to 1"),
    (GATEWAY + "dataset: {max_bytes: 1000}\n", "dataset.max_bytes (line 2): Input should be greater than or equal to "
     "1048576"),
    # a typo
    (GATEWAY + "dataset: {max_frame: 5}\n", "dataset.max_frame (line 2): unknown key; expected one of: record, dir, "
     "max_frames, max_bytes, confident_sample, jpeg_quality, queue_size, max_pending"),
])
def test_bad_settings_are_named(tmp_path: pathlib.Path, text: str, problem: str) -> None:
    problems = check_config(write(tmp_path, text), env={})
    assert len(problems) == 1 and problem in problems[0], problems


def test_config_check_reports_it(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "cameras: [{id: a, source: 'synthetic://conveyor', record: true}]\n")
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 1 and "escalation.gateway is not set" in result.output


def test_a_reload_applies_record_to_the_running_camera_and_leaves_the_section_for_a_restart() -> None:
    base = {"escalation": {"gateway": "127.0.0.1:1"}, "cameras": [{"id": "a", "source": "synthetic://conveyor"}]}
    running = AgentConfig.model_validate(base)
    new = AgentConfig.model_validate({**base, "cameras": [{"id": "a", "source": "synthetic://conveyor",
                                                           "record": True}], "dataset": {"max_frames": 9}})
    plan = plan_reload(running, new)
    assert plan.retuned == ("a",) and plan.restarted == ()  # the grabber keeps running
    assert plan.needs_restart == ("dataset.max_frames",)
    assert plan.config.records(plan.config.cameras[0]) and plan.config.dataset.max_frames == 5000
