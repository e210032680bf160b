"""The ``cameras[].zones`` section (agent.config.zones): what a good one looks like and the error each bad one gets,
with the field path and line ``edge-agent config check`` prints."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from agent.config.loader import load_config
from agent.config.reload import plan_reload
from agent.errors import ConfigError

HEAD = """\
cameras:
  - id: cam1
    source: synthetic://conveyor
    zones:
"""


def load(tmp_path: pathlib.Path, zones: str):
    path = tmp_path / "agent.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(zones), "      "), encoding="utf-8")
    return load_config(path, env={})


def problems(tmp_path: pathlib.Path, zones: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, zones)
    return info.value.problems


def test_a_good_section_loads_with_its_defaults(tmp_path):
    cfg = load(tmp_path, """\
        include:
          - {name: belt, points: [[0, 0.1], [1, 0.1], [1, 0.9], [0, 0.9]]}
        exclude:
          - {name: lamp, units: pixels, points: [[300, 200], [340, 200], [340, 240]]}
        """)
    zones = cfg.cameras[0].zones
    assert zones is not None
    assert (zones.rule, zones.min_overlap, zones.units, zones.allow_overlap) == ("centre", 0.5, "fraction", False)
    resolved = zones.resolve(640, 480)
    assert resolved.include[0].points == ((0.0, 48.0), (640.0, 48.0), (640.0, 432.0), (0.0, 432.0))
    assert resolved.exclude[0].points == ((300.0, 200.0), (340.0, 200.0), (340.0, 240.0))  # pixels stay


@pytest.mark.parametrize(("zones", "expected"), [
    # fewer than 3 points
    ("exclude: [{name: line, points: [[0, 0], [1, 1]]}]\n",
     "cameras[0].zones.exclude[0] (line 5): zone 'line' needs at least 3 points (a polygon), got 2"),
    # a bow tie
    ("exclude: [{name: bow, points: [[0, 0], [1, 1], [1, 0], [0, 1]]}]\n",
     "cameras[0].zones.exclude[0] (line 5): zone 'bow' crosses itself (its edges from point 0 and from point 2 "
     "meet, or a point repeats); list the corners in order around the zone"),
    # a fraction zone outside the frame, known at load
    ("exclude: [{name: rail, points: [[0, 0], [1.2, 0], [1, 0.1]]}]\n",
     "cameras[0].zones (line 4): exclude zone 'rail' is in fractions of the frame but point [1.2, 0.0] is outside "
     "0..1 (the frame); use units: pixels for pixel coordinates"),
    # include and exclude overlapping
    ("include: [{name: belt, points: [[0, 0], [1, 0], [1, 1], [0, 1]]}]\n"
     "exclude: [{name: edge, points: [[0, 0], [1, 0], [1, 0.1], [0, 0.1]]}]\n",
     "cameras[0].zones (line 4): exclude zone 'edge' overlaps include zone 'belt'; shrink one of them, or set "
     "allow_overlap: true to ignore the overlapping part (the exclude wins)"),
    # nothing left to inspect
    ("allow_overlap: true\n"
     "include: [{name: belt, points: [[0.2, 0.2], [0.4, 0.2], [0.4, 0.4]]}]\n"
     "exclude: [{name: all, points: [[0, 0], [1, 0], [1, 1], [0, 1]]}]\n",
     "cameras[0].zones (line 4): these zones leave nothing to inspect: the exclude polygons cover every include "
     "polygon (or the whole frame)"),
    # no polygon at all
    ("rule: overlap\n", "cameras[0].zones (line 4): zones needs at least one include or exclude polygon"),
    # a name twice
    ("exclude: [{name: a, points: [[0, 0], [1, 0], [1, 0.1]]}, {name: a, points: [[0, 1], [1, 1], [1, 0.9]]}]\n",
     "cameras[0].zones (line 4): zone name(s) 'a' used more than once; names must be unique"),
    # an unknown rule
    ("rule: middle\nexclude: [{name: a, points: [[0, 0], [1, 0], [1, 0.1]]}]\n",
     "cameras[0].zones.rule (line 5): Input should be 'centre' or 'overlap' (got 'middle')"),
])
def test_bad_zones_get_a_clear_error(tmp_path, zones, expected):
    assert problems(tmp_path, zones) == [expected]


def test_allow_overlap_lets_the_exclude_win(tmp_path):
    cfg = load(tmp_path, """\
        allow_overlap: true
        include: [{name: belt, points: [[0, 0], [1, 0], [1, 1], [0, 1]]}]
        exclude: [{name: edge, points: [[0, 0], [1, 0], [1, 0.1], [0, 0.1]]}]
        """)
    assert cfg.cameras[0].zones is not None and cfg.cameras[0].zones.allow_overlap


def test_changing_zones_retunes_the_camera_without_a_new_grabber(tmp_path):
    before = load(tmp_path, "exclude: [{name: edge, points: [[0, 0], [1, 0], [1, 0.1], [0, 0.1]]}]\n")
    after = load(tmp_path, "exclude: [{name: edge, points: [[0, 0], [1, 0], [1, 0.2], [0, 0.2]]}]\n")
    plan = plan_reload(before, after)
    assert plan.retuned == ("cam1",) and plan.restarted == ()
    assert plan.live == ("cameras[cam1].zones.exclude",)
