"""Letterbox arithmetic on hand-worked numbers (same rules as ultralytics' LetterBox)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.prefilter.letterbox import (
    PAD_FLOAT,
    PAD_VALUE,
    TO_FLOAT,
    boxes_to_source,
    letterbox_into,
    letterbox_to_tensor,
    plan_letterbox,
    to_nchw_float,
)


@pytest.mark.parametrize(
    ("src", "dst", "scale", "new", "left", "top"),
    [
        # 640x480 camera into 320x320: r = min(320/480, 320/640) = 0.5, 320x240, dh = 80/2 = 40
        ((640, 480), (320, 320), 0.5, (320, 240), 0, 40),
        # 1920x1080 into 320: r = 1/6, 320x180, dh = 140/2 = 70 -> top = round(69.9) = 70
        ((1920, 1080), (320, 320), 1 / 6, (320, 180), 0, 70),
        # upscaling a small image: r = min(320/50, 320/100) = 3.2, 320x160, top = round(79.9) = 80
        ((100, 50), (320, 320), 3.2, (320, 160), 0, 80),
        # odd padding: r = 320/301, new_w = round(318.94) = 319, dw = 0.5 -> left = round(0.4) = 0
        ((300, 301), (320, 320), 320 / 301, (319, 320), 0, 0),
        # portrait: r = min(320/640, 320/360) = 0.5, 180x320, dw = 70 -> left = 70
        ((360, 640), (320, 320), 0.5, (180, 320), 70, 0),
        # same size: nothing to do
        ((320, 320), (320, 320), 1.0, (320, 320), 0, 0),
    ],
)
def test_plan_letterbox(src, dst, scale, new, left, top):
    plan = plan_letterbox(*src, *dst)
    assert plan.scale == pytest.approx(scale)
    assert (plan.new_w, plan.new_h) == new
    assert (plan.left, plan.top) == (left, top)


def test_letterbox_into_places_image_and_pads_grey():
    image = np.full((480, 640, 3), 200, np.uint8)
    plan = plan_letterbox(640, 480, 320, 320)
    out = np.zeros((320, 320, 3), np.uint8)
    letterbox_into(image, plan, out)
    assert (out[:40] == PAD_VALUE).all()  # top padding rows 0..39
    assert (out[280:] == PAD_VALUE).all()  # bottom padding rows 280..319
    assert (out[40:280] == 200).all()  # the image, resized
    # the buffer is reused: a second, different image leaves no trace of the first
    letterbox_into(np.zeros((480, 640, 3), np.uint8), plan, out)
    assert (out[40:280] == 0).all() and (out[:40] == PAD_VALUE).all()


def test_to_nchw_float_swaps_bgr_to_rgb_and_scales():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 255, 51, 0  # B=255, G=51, R=0
    out = np.empty((3, 2, 2), np.float32)
    to_nchw_float(img, out)
    assert out[0].max() == 0.0  # R
    assert out[1] == pytest.approx(np.full((2, 2), 0.2))  # G = 51/255
    assert out[2] == pytest.approx(np.ones((2, 2)))  # B


def test_boxes_back_to_source_pixels():
    plan = plan_letterbox(640, 480, 320, 320)  # r = 0.5, top = 40
    boxes = np.array([[100, 60, 200, 140],  # -> (200, 40, 400, 200)
                      [-10, 30, 330, 300]], np.float32)  # outside the image -> clipped to 640x480
    got = boxes_to_source(boxes, plan)
    assert got[0] == pytest.approx([200, 40, 400, 200])
    assert got[1] == pytest.approx([0, 0, 640, 480])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: plan_letterbox(0, 480, 320, 320), "must be positive"),
        (lambda: letterbox_into(np.zeros((480, 640), np.uint8), plan_letterbox(640, 480, 320, 320),
                                np.zeros((320, 320, 3), np.uint8)), "expected a BGR image"),
        (lambda: letterbox_into(np.zeros((480, 600, 3), np.uint8), plan_letterbox(640, 480, 320, 320),
                                np.zeros((320, 320, 3), np.uint8)), "plan is for 640x480"),
        (lambda: boxes_to_source(np.zeros((3,)), plan_letterbox(640, 480, 320, 320)), "shape (N, 4)"),
    ],
)
def test_bad_shapes_say_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


@pytest.mark.parametrize("size", [(1280, 960), (640, 480), (1920, 1080), (300, 301), (360, 640), (100, 50), (320, 320)])
def test_letterbox_to_tensor_gives_the_two_step_numbers_bit_for_bit(size):
    w, h = size
    rng = np.random.default_rng(w * h)
    plan = plan_letterbox(w, h, 320, 320)
    scratch = np.empty((plan.new_h, plan.new_w, 3), np.uint8)
    fast = np.full((3, 320, 320), -1.0, np.float32)  # what a reused buffer holds: anything
    for painted in (False, True):  # the second frame keeps the border the first one painted
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        canvas = np.zeros((320, 320, 3), np.uint8)
        letterbox_into(image, plan, canvas)
        slow = np.empty((3, 320, 320), np.float32)
        to_nchw_float(canvas, slow)
        letterbox_to_tensor(image, plan, fast, scratch, border_painted=painted)
        assert np.array_equal(fast, slow)
    assert fast[0, 0, 0] == PAD_FLOAT or (plan.left, plan.top) == (0, 0)


def test_letterbox_to_tensor_refuses_wrong_buffers():
    plan = plan_letterbox(640, 480, 320, 320)
    image = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(ValueError, match=r"scratch image must be \(240, 320, 3\)"):
        letterbox_to_tensor(image, plan, np.zeros((3, 320, 320), np.float32), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="tensor buffer must be float32"):
        letterbox_to_tensor(image, plan, np.zeros((3, 320, 320), np.float64), np.zeros((240, 320, 3), np.uint8))
    with pytest.raises(ValueError, match="plan is for 640x480"):
        letterbox_to_tensor(np.zeros((48, 64, 3), np.uint8), plan, np.zeros((3, 320, 320), np.float32), None)


def test_the_float_table_holds_exactly_the_division_by_255():
    # every uint8 value v: TO_FLOAT[v] has the bits of np.float32(v) / 255, so the look-up equals the division
    values = np.arange(256, dtype=np.uint8)
    divided = np.divide(values, np.float32(255.0), dtype=np.float32)
    assert TO_FLOAT.dtype == np.float32
    assert np.array_equal(TO_FLOAT.view(np.uint32), divided.view(np.uint32))
    assert not TO_FLOAT.flags.writeable


def test_letterbox_to_tensor_fills_a_tensor_with_strided_columns_too():
    # a (3, 320, 320) view taking every second column of a wider array: cv2 cannot address it, the division fills it
    w, h = 640, 480
    image = np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)
    plan = plan_letterbox(w, h, 320, 320)
    scratch = np.empty((plan.new_h, plan.new_w, 3), np.uint8)
    strided = np.zeros((3, 320, 640), np.float32)[:, :, ::2]
    dense = np.zeros((3, 320, 320), np.float32)
    letterbox_to_tensor(image, plan, strided, scratch)
    letterbox_to_tensor(image, plan, dense, scratch)
    assert np.array_equal(strided, dense)
