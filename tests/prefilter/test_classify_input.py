"""Classifier input arithmetic on hand-worked numbers: stretch, letterbox, centre crop, normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from agent.prefilter.classify_input import (
    IDENTITY,
    Normalisation,
    normalise_into,
    plan_input,
    resize_into,
    softmax,
)
from agent.prefilter.letterbox import PAD_VALUE


@pytest.mark.parametrize(
    ("src", "dst", "mode", "crop", "window"),
    [
        # 640x480 stretched into 256x192: everything into everything
        ((640, 480), (256, 192), "stretch", (0, 0, 640, 480), (0, 0, 256, 192)),
        # 640x480 letterboxed into 224x224: r = 0.35, 224x168, dh = 28 -> top = round(27.9) = 28
        ((640, 480), (224, 224), "letterbox", (0, 0, 640, 480), (0, 28, 224, 168)),
        # 640x480 centre-cropped to 224x224: s = max(0.35, 0.4667) = 0.4667, crop 480x480 from x = 80
        ((640, 480), (224, 224), "center-crop", (80, 0, 480, 480), (0, 0, 224, 224)),
        # portrait 480x640 centre-cropped to 256x192: s = max(256/480, 192/640) = 0.5333, crop 480x360, y = 140
        ((480, 640), (256, 192), "center-crop", (0, 140, 480, 360), (0, 0, 256, 192)),
        # same aspect: centre crop takes the whole frame
        ((640, 480), (320, 240), "center-crop", (0, 0, 640, 480), (0, 0, 320, 240)),
    ],
)
def test_plan_input(src, dst, mode, crop, window):
    plan = plan_input(*src, *dst, mode)
    assert plan.crop == crop and plan.window == window


def test_plan_input_refuses_bad_sizes_and_modes():
    with pytest.raises(ValueError, match="must be positive"):
        plan_input(0, 10, 32, 32, "stretch")
    with pytest.raises(ValueError, match="expected one of stretch, letterbox, center-crop"):
        plan_input(10, 10, 32, 32, "squash")  # type: ignore[arg-type]


def test_resize_into_each_mode():
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, :320] = 200  # left half bright, right half black
    out = np.zeros((192, 256, 3), np.uint8)
    resize_into(image, plan_input(640, 480, 256, 192, "stretch"), out, "area")
    assert (out[:, :128] == 200).all() and (out[:, 128:] == 0).all()  # 2.5x shrink, the edge falls between pixels
    box = np.zeros((224, 224, 3), np.uint8)
    resize_into(image, plan_input(640, 480, 224, 224, "letterbox"), box, "linear")
    assert (box[:28] == PAD_VALUE).all() and (box[196:] == PAD_VALUE).all() and box[28:196, :100].min() == 200
    crop = np.zeros((224, 224, 3), np.uint8)
    resize_into(image, plan_input(640, 480, 224, 224, "center-crop"), crop, "area")
    # the crop is x 80..560: 240 bright columns then 240 black -> half and half
    assert (crop[:, :111] == 200).all() and (crop[:, 113:] == 0).all()


def test_resize_into_checks_shapes():
    plan = plan_input(64, 48, 32, 24, "stretch")
    with pytest.raises(ValueError, match="plan is for 64x48"):
        resize_into(np.zeros((10, 10, 3), np.uint8), plan, np.zeros((24, 32, 3), np.uint8), "area")
    with pytest.raises(ValueError, match=r"output buffer must be uint8 \(24, 32, 3\)"):
        resize_into(np.zeros((48, 64, 3), np.uint8), plan, np.zeros((32, 32, 3), np.uint8), "area")
    with pytest.raises(ValueError, match=r"expected a BGR image of shape \(H, W, 3\)"):
        resize_into(np.zeros((48, 64), np.uint8), plan, np.zeros((24, 32, 3), np.uint8), "area")


def test_normalise_into_swaps_to_rgb_and_applies_mean_std():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 255, 51, 0  # B=255, G=51, R=0
    out = np.empty((3, 2, 2), np.float32)
    normalise_into(img, Normalisation((0.5, 0.2, 0.0), (0.5, 0.1, 2.0)), out)
    assert out[0] == pytest.approx(np.full((2, 2), (0.0 - 0.5) / 0.5))  # R = 0 -> -1
    assert out[1] == pytest.approx(np.full((2, 2), (0.2 - 0.2) / 0.1), abs=1e-6)  # G = 51/255 = 0.2 -> 0
    assert out[2] == pytest.approx(np.full((2, 2), 1.0 / 2.0))  # B = 1 -> 0.5
    normalise_into(img, IDENTITY, out)
    assert out[2] == pytest.approx(np.ones((2, 2)))


def test_normalisation_refuses_bad_values():
    with pytest.raises(ValueError, match="std values must be above 0"):
        Normalisation((0.0, 0.0, 0.0), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="need 3 values"):
        Normalisation((0.0, 0.0), (1.0, 1.0))  # type: ignore[arg-type]


def test_softmax():
    assert softmax([0.0, np.log(3.0)]) == pytest.approx([0.25, 0.75])
    assert softmax([1000.0, 1000.0]) == pytest.approx([0.5, 0.5])  # no overflow
