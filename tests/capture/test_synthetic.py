"""The synthetic conveyor scene: deterministic, and its ground truth fits the picture."""

from __future__ import annotations

import numpy as np

from agent.capture.synthetic import DEFECT_CLASSES, ConveyorScene, SceneSettings, render_still


def test_same_seed_same_frames_and_truth() -> None:
    a, b = ConveyorScene(5), ConveyorScene(5)
    for _ in range(10):
        (fa, ta), (fb, tb) = a.next_frame(), b.next_frame()
        assert np.array_equal(fa, fb) and ta == tb
    assert not np.array_equal(ConveyorScene(6).next_frame()[0], ConveyorScene(5).next_frame()[0])


def test_stream_truth_boxes_lie_inside_the_frame_and_parts_move() -> None:
    s = SceneSettings(speed_px=14.0, faint_rate=0.3)  # a fast belt: many parts in few frames
    scene = ConveyorScene(2, s)
    defects, faint, first_parts = 0, 0, None
    for i in range(100):
        frame, truth = scene.next_frame()
        assert frame.shape == (s.height, s.width, 3) and frame.dtype == np.uint8
        for d in truth.defects:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= s.width and 0 <= y1 < y2 <= s.height
            assert d.label in DEFECT_CLASSES and 0 < d.strength <= 1
            defects += 1
            faint += d.faint
        assert truth.verdict == ("defect" if truth.defects else "pass")
        if i == 40:
            first_parts = truth.parts
    assert defects > 15 and 0 < faint < defects  # some defects, a share of them faint
    assert first_parts  # parts are on the belt after the first few seconds


def test_stills_cover_every_class_and_include_empty_frames() -> None:
    rng = np.random.default_rng(0)
    labels: set[str] = set()
    empty = 0
    for _ in range(60):
        _frame, truth = render_still(rng)
        labels |= {d.label for d in truth.defects}
        empty += not truth.defects
    assert labels == set(DEFECT_CLASSES) and empty > 0


def test_a_defect_changes_the_pixels_where_its_box_is() -> None:
    # faintness aside, every labelled defect must be visible: its box differs from a clean belt/part
    rng = np.random.default_rng(3)
    for _ in range(20):
        frame, truth = render_still(rng)
        for d in truth.defects:
            x1, y1, x2, y2 = (int(v) for v in d.box)
            patch = frame[y1:y2, x1:x2].astype(np.float32)
            assert patch.std() > 4.0, d  # more than the sensor noise alone
