"""Inspection zones: the polygon geometry (agent.core.zones), the rasterised inspected area and its two rules,
the classifier's crop, and the checks only the frame can make (agent.triage.zones)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from agent.config.zones import ZonesConfig
from agent.core.detections import Detection
from agent.core.zones import (
    FrameZones,
    Polygon,
    point_in_polygon,
    points_in_polygon,
    polygon_area,
    polygons_overlap,
    self_intersection,
)
from agent.triage.zones import CameraZones, ZoneMask

SQUARE = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]


@pytest.mark.parametrize(("points", "area"), [
    (SQUARE, 100.0),  # 10 x 10
    ([(0.0, 0.0), (4.0, 0.0), (0.0, 3.0)], 6.0),  # right triangle 4 x 3 / 2
    (list(reversed(SQUARE)), 100.0),  # clockwise or not
])
def test_polygon_area(points, area):
    assert polygon_area(points) == pytest.approx(area)


@pytest.mark.parametrize(("points", "crossing"), [
    (SQUARE, None),  # simple
    ([(0.0, 0.0), (10.0, 10.0), (10.0, 0.0), (0.0, 10.0)], (0, 2)),  # a bow tie: edges 0-1 and 2-3 cross
    ([(0.0, 0.0), (10.0, 0.0), (0.0, 0.0), (0.0, 10.0)], (0, 2)),  # a repeated point
    ([(0.0, 0.0), (10.0, 0.0), (5.0, 0.0), (5.0, 5.0)], (0, 2)),  # an edge folding back along another
    ([(0.0, 0.0), (4.0, 0.0), (4.0, 4.0), (2.0, 1.0), (0.0, 4.0)], None),  # concave but simple
])
def test_self_intersection(points, crossing):
    assert self_intersection(points) == crossing


@pytest.mark.parametrize(("b", "overlap"), [
    ([(5.0, 5.0), (15.0, 5.0), (15.0, 15.0), (5.0, 15.0)], True),  # corners overlap
    ([(10.0, 0.0), (20.0, 0.0), (20.0, 10.0), (10.0, 10.0)], False),  # shares an edge only
    ([(2.0, 2.0), (4.0, 2.0), (4.0, 4.0), (2.0, 4.0)], True),  # inside
    ([(-5.0, -5.0), (15.0, -5.0), (15.0, 15.0), (-5.0, 15.0)], True),  # contains
    (SQUARE, True),  # the same square
    ([(20.0, 0.0), (30.0, 0.0), (30.0, 10.0)], False),  # apart
])
def test_polygons_overlap(b, overlap):
    assert polygons_overlap(SQUARE, b) is overlap
    assert polygons_overlap(b, SQUARE) is overlap


def test_point_in_polygon_scalar_and_vectorised_agree():
    xs, ys = np.meshgrid(np.arange(-2.5, 13, 1.0), np.arange(-2.5, 13, 1.0))
    vector = points_in_polygon(xs, ys, SQUARE)
    scalar = np.array([[point_in_polygon((float(x), float(y)), SQUARE) for x, y in zip(rx, ry, strict=True)]
                       for rx, ry in zip(xs, ys, strict=True)])
    assert (vector == scalar).all() and vector.sum() == 100  # the 10 x 10 half-pixel centres inside


def zones(include=(), exclude=(), rule="centre", min_overlap=0.5, size=(100, 80)) -> FrameZones:
    return FrameZones(size[0], size[1], tuple(Polygon(f"i{n}", tuple(p)) for n, p in enumerate(include)),
                      tuple(Polygon(f"e{n}", tuple(p)) for n, p in enumerate(exclude)), rule, min_overlap)


TOP_BAND = [(0, 0), (100, 0), (100, 20), (0, 20)]  # rows 0..19 of a 100 x 80 frame


def box(x1, y1, x2, y2) -> Detection:
    return Detection("scratch", 0, 0.9, (x1, y1, x2, y2))


@pytest.mark.parametrize(("rule", "b", "kept"), [
    ("centre", (10, 0, 20, 10), False),  # centre (15, 5) in the ignored band
    ("centre", (10, 15, 20, 35), True),  # centre (15, 25) below it, though a quarter of the box is in it
    ("overlap", (10, 15, 20, 35), True),  # 15 of 20 rows inspected: 0.75 >= 0.5
    ("overlap", (10, 5, 20, 25), False),  # 5 of 20 rows: 0.25 < 0.5
    ("overlap", (10, 10, 20, 30), True),  # 10 of 20 rows: exactly 0.5 counts
    ("centre", (-10, 40, 0, 50), False),  # centre outside the frame
])
def test_an_exclude_band_with_each_rule(rule, b, kept):
    mask = ZoneMask(zones(exclude=[TOP_BAND], rule=rule))
    assert mask.area == 100 * 60  # 80 rows less the 20 ignored
    assert mask.keeps(b) is kept


def test_include_and_exclude_together_and_whole_frame_labels_kept():
    # inspect the left half, less a hole in it
    mask = ZoneMask(zones(include=[[(0, 0), (50, 0), (50, 80), (0, 80)]],
                          exclude=[[(10, 10), (30, 10), (30, 30), (10, 30)]]))
    dets = [box(15, 15, 25, 25), box(60, 10, 70, 20), box(35, 40, 45, 50), Detection("scratch", 0, 0.8, None)]
    kept, dropped = mask.split(dets)
    assert [d.box for d in kept] == [(35, 40, 45, 50), None]  # the classifier-style label has no box: kept
    assert [d.box for d in dropped] == [(15, 15, 25, 25), (60, 10, 70, 20)]
    assert mask.crop_box == (0, 0, 50, 80)  # columns 0..49
    assert mask.inside_share((0, 0, 0, 0)) == 0.0  # an empty box


def test_classifier_crop_fills_what_is_not_inspected():
    image = np.zeros((80, 100, 3), np.uint8)
    image[:, :, 0] = 200  # blue frame ...
    image[25:35, 25:35] = (0, 0, 255)  # ... with a red mark inside the ignored square
    mask = ZoneMask(zones(include=[[(20, 20), (60, 20), (60, 60), (20, 60)]],
                          exclude=[[(24, 24), (36, 24), (36, 36), (24, 36)]], ))
    crop = mask.crop(image)
    assert crop.shape == (40, 40, 3) and mask.crop_box == (20, 20, 60, 60)
    assert (crop == (200, 0, 0)).all()  # the mark is covered by the inspected pixels' mean colour
    with pytest.raises(ValueError, match=r"expected a BGR frame of shape \(80, 100, 3\)"):
        mask.crop(image[:40])


def cfg(**kwargs) -> ZonesConfig:
    return ZonesConfig.model_validate(kwargs)


def test_camera_zones_resolve_fractions_per_frame_size():
    cam = CameraZones("cam1", cfg(exclude=[{"name": "edge", "points": [[0, 0], [1, 0], [1, 0.25], [0, 0.25]]}]))
    small, large = cam.for_frame(100, 80), cam.for_frame(200, 160)
    assert isinstance(small, ZoneMask) and isinstance(large, ZoneMask)
    assert (small.area, large.area) == (100 * 60, 200 * 120)
    assert cam.for_frame(100, 80) is small  # cached


def test_a_pixel_zone_outside_the_frame_is_reported_once(caplog):
    cam = CameraZones("cam1", cfg(units="pixels", exclude=[{"name": "rail", "points": [[0, 0], [700, 0], [700, 30]]}]))
    with caplog.at_level(logging.ERROR, logger="agent.triage.zones"):
        problems = [cam.for_frame(640, 480) for _ in range(5)]
    assert problems[0] == ("exclude zone 'rail': point [700, 0] is outside the 640x480 frame (pixels 0..640 across, "
                           "0..480 down); fix cameras[].zones")
    assert all(p is problems[0] for p in problems)
    assert [r.getMessage() for r in caplog.records] == [
        f"camera cam1: zones not applied, its 640x480 frames are inspected whole: {problems[0]}"]  # once
    report = cam.report(problems[0])
    assert not report.applied and report.to_payload()["error"] == problems[0]
    assert isinstance(cam.for_frame(800, 600), ZoneMask)  # another size: fits


def test_mixed_units_overlap_and_nothing_left_are_found_on_the_frame():
    mixed = CameraZones("cam2", cfg(include=[{"name": "belt", "points": [[0, 0], [1, 0], [1, 1], [0, 1]]}],
                                    exclude=[{"name": "lamp", "units": "pixels",
                                              "points": [[10, 10], [20, 10], [20, 20]]}]))
    assert mixed.for_frame(100, 80) == ("exclude zone 'lamp' overlaps include zone 'belt'; shrink one, or set "
                                        "allow_overlap: true (the exclude wins)")
    covered = CameraZones("cam3", cfg(units="pixels", exclude=[{"name": "all",
                                                                "points": [[0, 0], [100, 0], [100, 80], [0, 80]]}]))
    assert covered.for_frame(100, 80) == "these zones leave no pixel of the frame to inspect"
    assert isinstance(covered.for_frame(200, 80), ZoneMask)  # half of a wider frame is left


@pytest.mark.parametrize("star", [
    [(50.0, 2.0), (61.3, 30.0), (97.0, 30.5), (68.0, 49.0), (80.0, 78.0), (50.0, 60.0), (20.0, 78.0),
     (32.0, 49.0), (3.0, 30.5), (38.7, 30.0)],  # a star: concave, edges at odd angles
    [(-5.0, 10.0), (90.3, 3.7), (40.0, 95.0)],  # a triangle (an odd number of edges) reaching past the frame
])
def test_the_mask_agrees_with_the_pixel_centre_rule_on_an_odd_polygon(star):
    mask = ZoneMask(zones(include=[star]))
    ys, xs = np.mgrid[0:80, 0:100].astype(np.float64) + 0.5
    assert np.array_equal(mask.mask.astype(bool), points_in_polygon(xs, ys, star))
