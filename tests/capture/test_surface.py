"""The grey surface scene: deterministic, varied, and its ground truth boxes hold every drawn defect."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agent.capture.scenes import SCENES, get_scene
from agent.capture.sources import SyntheticSource, as_bgr
from agent.capture.surface import SURFACE_CLASSES, SURFACE_SEVERITY, SurfaceScene, SurfaceSettings, render_surface
from agent.errors import SourceError


def test_same_seed_same_frames_other_seed_other_frames() -> None:
    a, b = SurfaceScene(5), SurfaceScene(5)
    for _ in range(4):
        (fa, ta), (fb, tb) = a.next_frame(), b.next_frame()
        assert np.array_equal(fa, fb) and ta == tb
    assert not np.array_equal(SurfaceScene(6).next_frame()[0], SurfaceScene(5).next_frame()[0])


def test_grey_frames_of_their_own_size_with_faint_defects_and_clean_frames() -> None:
    rng = np.random.default_rng(0)
    faint = clean = total = 0
    tones = []
    for _ in range(60):
        frame, truth = render_surface(rng)
        assert frame.shape == (640, 640) and frame.dtype == np.uint8  # single channel, not the conveyor's size
        assert truth.parts == () and truth.verdict == ("defect" if truth.defects else "pass")
        tones.append(float(frame.mean()))
        for d in truth.defects:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 640 and d.label in SURFACE_CLASSES
            assert d.faint == (d.strength < 0.4)
            total += 1
            faint += d.faint
        clean += not truth.defects
    assert 15 < clean < 45  # about half of the frames are clean
    assert 0 < faint < total  # a share of the defects is faint
    assert np.std(tones) > 8  # the surface's tone varies from frame to frame


def test_every_class_appears_and_sizes_vary() -> None:
    rng = np.random.default_rng(1)
    sides: dict[str, list[float]] = {c: [] for c in SURFACE_CLASSES}
    for _ in range(80):
        for d in render_surface(rng)[1].defects:
            sides[d.label].append(max(d.box[2] - d.box[0], d.box[3] - d.box[1]))
    assert all(sides[c] for c in SURFACE_CLASSES), {c: len(v) for c, v in sides.items()}
    every = [s for v in sides.values() for s in v]
    assert min(every) < 16 and max(every) > 150  # small pits and long scratches/inclusions


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_boxes_hold_every_pixel_a_defect_changed(seed: int) -> None:
    # the same stream with and without defects (the texture is drawn first, no sensor noise): the difference
    # is the defects alone; it must lie inside the boxes, and every box that is not faint must show one
    quiet = SurfaceSettings(noise_sigma=0.0, defect_rate=0.0)
    busy = dataclasses.replace(quiet, defect_rate=1.0)
    for i in range(6):
        clean, none = render_surface(np.random.default_rng([seed, i]), quiet)
        frame, truth = render_surface(np.random.default_rng([seed, i]), busy)
        assert none.defects == () and truth.defects
        diff = np.abs(frame.astype(np.int16) - clean.astype(np.int16))
        inside = np.zeros(diff.shape, bool)
        for d in truth.defects:
            x1, y1, x2, y2 = (int(v) for v in d.box)
            inside[y1:y2 + 1, x1:x2 + 1] = True
            if not d.faint:
                assert diff[y1:y2 + 1, x1:x2 + 1].max() > 15, d
        assert diff[~inside].max(initial=0) <= 8, truth.defects


def test_registry_and_source_hand_out_bgr_frames_of_the_grey_scene() -> None:
    scene = get_scene("surface")
    assert scene.grey and scene.size == (640, 640) and set(scene.severity) == set(SURFACE_CLASSES)
    assert SURFACE_SEVERITY[0] == "crack" and set(SCENES) == {"conveyor", "surface"}
    with pytest.raises(SourceError, match="unknown synthetic scene 'belt'; accepted: conveyor, surface"):
        get_scene("belt")
    source = SyntheticSource("synthetic://surface?seed=4&frames=2&width=400&height=320")
    source.open()
    expected = SurfaceScene(4, SurfaceSettings(width=400, height=320))
    for _ in range(2):
        got = source.read()
        grey, truth = expected.next_frame()
        assert got is not None and got.image is not None and got.image.shape == (320, 400, 3)
        assert all(np.array_equal(got.image[:, :, c], grey) for c in range(3)) and got.truth == truth
    assert source.read() is None
    source.close()
    assert SyntheticSource("synthetic://surface").width == 640
    with pytest.raises(SourceError, match="unknown synthetic scene 'steel'; accepted: conveyor, surface"):
        SyntheticSource("synthetic://steel")


@pytest.mark.parametrize("shape", [(6, 8), (6, 8, 1)])
def test_as_bgr_puts_a_grey_frame_in_all_three_channels(shape: tuple[int, ...]) -> None:
    grey = np.arange(48, dtype=np.uint8).reshape(shape)
    out = as_bgr(grey)
    assert out.shape == (6, 8, 3) and all(np.array_equal(out[:, :, c], grey.reshape(6, 8)) for c in range(3))
    colour = np.zeros((6, 8, 3), np.uint8)
    assert as_bgr(colour) is colour
