"""The conveyor's belt-edge marks (synthetic://conveyor?edge_marks=1): defect-like, outside every part, listed
as decoys (never as defects), and the rest of the stream unchanged by them."""

from __future__ import annotations

import numpy as np
import pytest

from agent.capture.edge_marks import EDGE_MARK_CLASSES, RAIL
from agent.capture.sources import SyntheticSource
from agent.capture.synthetic import ConveyorScene, SceneSettings
from agent.errors import SourceError


def test_marks_lie_on_the_edges_outside_every_part_and_are_not_defects():
    plain = ConveyorScene(seed=2)
    marked = ConveyorScene(seed=2, settings=SceneSettings(edge_marks=True))
    seen: set[str] = set()
    for _ in range(30):
        a_img, a = plain.next_frame()
        b_img, b = marked.next_frame()
        assert (a.parts, a.defects) == (b.parts, b.defects)  # the same parts and defects with or without marks
        assert a.decoys == ()
        for mark in b.decoys:
            x1, y1, x2, y2 = mark.box
            assert y2 <= RAIL + 1 or y1 >= 480 - RAIL - 1, mark.box  # on an edge band
            assert all(x2 <= px1 or x1 >= px2 or y2 <= py1 or y1 >= py2 for px1, py1, px2, py2 in b.parts)
            seen.add(mark.label)
        middle = slice(RAIL + 4, 480 - RAIL - 4)  # the belt between the edges: only the noise differs
        assert np.abs(a_img[middle].astype(int) - b_img[middle].astype(int)).mean() < 6
    assert seen <= set(EDGE_MARK_CLASSES) and len(seen) >= 2


def test_the_source_key():
    source = SyntheticSource("synthetic://conveyor?seed=4&edge_marks=1&frames=3")
    source.open()
    frames = [source.read() for _ in range(3)]
    assert all(f is not None and f.truth is not None for f in frames)
    assert any(f.truth.decoys for f in frames if f is not None and f.truth is not None)
    assert not SyntheticSource("synthetic://conveyor?edge_marks=0").edge_marks
    with pytest.raises(SourceError, match="edge_marks is an option of synthetic://conveyor only"):
        SyntheticSource("synthetic://surface?edge_marks=1")
    with pytest.raises(SourceError, match="'edge_marks' must be between 0 and 1, got 2"):
        SyntheticSource("synthetic://conveyor?edge_marks=2")
