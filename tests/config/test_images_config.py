"""The ``images:`` section: defaults, per-camera overrides, and its problems named by field when the file loads."""

from __future__ import annotations

import pathlib

import pytest

from agent.config.images import CameraImagesConfig, ImagesConfig
from agent.config.loader import check_config


def test_a_camera_overrides_what_it_sets_and_inherits_the_rest() -> None:
    images = ImagesConfig(enabled=True, max_days=30, pass_every_n=10, max_width=1280, cameras={
        "cam2": CameraImagesConfig(max_bytes=2 * 1024**3, pass_per_minute=2.0, max_width=0)})
    one, two = images.for_camera("cam1"), images.for_camera("cam2")
    assert (one.max_days, one.pass_every_n, one.pass_per_minute, one.max_width) == (30, 10, 0.0, 1280)
    # cam2's own pass rule replaces the section's (not both); max_width 0: full resolution
    assert (two.max_days, two.max_bytes, two.pass_every_n, two.pass_per_minute, two.max_width) == (
        30, 2 * 1024**3, 0, 2.0, None)


@pytest.mark.parametrize(("yaml", "problem"), [
    # a per-camera override for a camera that does not exist
    ("images:\n  cameras:\n    cam7: {max_days: 1}\n",
     "images.cameras.cam7: no camera with id 'cam7' is configured (cameras: cam1)"),
    # passes kept by two rules at once
    ("images:\n  pass_every_n: 10\n  pass_per_minute: 2\n", "images: pass_every_n (10) and pass_per_minute (2.0)"),
    # a bound too small to hold an image
    ("images:\n  max_bytes: 1000\n", "images.max_bytes"),
    # a verdict that is none
    ("images:\n  verdicts: [scratch]\n",
     "images.verdicts[0] (line 4): Input should be 'pass', 'defect' or 'uncertain'"),
])
def test_config_check_names_the_problem(tmp_path: pathlib.Path, yaml: str, problem: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("cameras:\n  - {id: cam1, source: 'synthetic://conveyor'}\n" + yaml, encoding="utf-8")
    problems = check_config(path)
    assert len(problems) == 1 and problem in problems[0], problems
