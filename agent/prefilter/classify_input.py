"""Classifier input: resize a camera frame into the model's input, then normalise.
Pure numpy/OpenCV; shared by the runtime (``ImageClassifier``) and the training
script, so that training and inference see the same pixels.

Three ways to fit a W x H frame into a w x h input (metadata key ``resize``):

* ``stretch``: the whole frame, resized to w x h (aspect ratio not kept). What
  the shipped conveyor classifier uses: a 4:3 camera into a 4:3 input loses nothing.
* ``letterbox``: the whole frame, aspect kept, grey (114) bars; the same
  arithmetic as the detector's letterbox (``agent.prefilter.letterbox``).
* ``center-crop``: scale so the input is covered, keep the centre
  (torchvision ``Resize`` + ``CenterCrop``; ultralytics' ``-cls`` models):
  ``s = max(w / W, h / H)``, crop ``round(w / s) x round(h / s)`` source pixels
  from the centre, resize it to w x h.

Then BGR -> RGB, values / 255, and per RGB channel ``(v - mean) / std``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal, get_args

import cv2
import numpy as np

from agent.prefilter.letterbox import PAD_VALUE, plan_letterbox

ResizeMode = Literal["stretch", "letterbox", "center-crop"]
Interpolation = Literal["linear", "area"]
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
_CV2_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


@dataclasses.dataclass(frozen=True)
class InputPlan:
    """Which source pixels go where in the model input."""

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int
    mode: ResizeMode
    crop: tuple[int, int, int, int]  # source region x, y, width, height
    window: tuple[int, int, int, int]  # destination region x, y, width, height (the rest is grey)


def plan_input(src_w: int, src_h: int, dst_w: int, dst_h: int, mode: ResizeMode) -> InputPlan:
    if min(src_w, src_h, dst_w, dst_h) <= 0:
        raise ValueError(f"image sizes must be positive, got source {src_w}x{src_h}, input {dst_w}x{dst_h}")
    if mode == "stretch":
        return InputPlan(src_w, src_h, dst_w, dst_h, mode, (0, 0, src_w, src_h), (0, 0, dst_w, dst_h))
    if mode == "letterbox":
        lb = plan_letterbox(src_w, src_h, dst_w, dst_h)
        return InputPlan(src_w, src_h, dst_w, dst_h, mode, (0, 0, src_w, src_h), (lb.left, lb.top, lb.new_w, lb.new_h))
    if mode == "center-crop":
        s = max(dst_w / src_w, dst_h / src_h)
        crop_w, crop_h = min(src_w, max(1, round(dst_w / s))), min(src_h, max(1, round(dst_h / s)))
        x, y = (src_w - crop_w) // 2, (src_h - crop_h) // 2
        return InputPlan(src_w, src_h, dst_w, dst_h, mode, (x, y, crop_w, crop_h), (0, 0, dst_w, dst_h))
    raise ValueError(f"resize mode {mode!r}: expected one of {', '.join(RESIZE_MODES)}")


def resize_into(image: np.ndarray, plan: InputPlan, out: np.ndarray, interpolation: Interpolation) -> None:
    """Fit ``image`` (BGR HxWx3 uint8) into the preallocated ``out`` (dst_h x dst_w x 3 uint8) as planned."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a BGR image of shape (H, W, 3), got {image.shape}")
    if image.shape[:2] != (plan.src_h, plan.src_w):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, plan is for {plan.src_w}x{plan.src_h}")
    if out.shape != (plan.dst_h, plan.dst_w, 3) or out.dtype != np.uint8:
        raise ValueError(f"output buffer must be uint8 {(plan.dst_h, plan.dst_w, 3)}, got {out.dtype} {out.shape}")
    cx, cy, cw, ch = plan.crop
    wx, wy, ww, wh = plan.window
    source = image[cy:cy + ch, cx:cx + cw]
    flag = _CV2_INTERPOLATION[interpolation]
    if (wx, wy, ww, wh) == (0, 0, plan.dst_w, plan.dst_h):
        if (cw, ch) == (ww, wh):
            out[...] = source
        else:
            cv2.resize(source, (ww, wh), dst=out, interpolation=flag)
        return
    out.fill(PAD_VALUE)
    window = out[wy:wy + wh, wx:wx + ww]
    window[...] = source if (cw, ch) == (ww, wh) else cv2.resize(source, (ww, wh), interpolation=flag)


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """Per RGB channel ``(v / 255 - mean) / std``, computed as ``v * scale + offset``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got mean {self.mean}, std {self.std}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be above 0, got {self.std}")

    @property
    def scale(self) -> np.ndarray:
        return np.array([1.0 / (255.0 * s) for s in self.std], np.float32)

    @property
    def offset(self) -> np.ndarray:
        return np.array([-m / s for m, s in zip(self.mean, self.std, strict=True)], np.float32)


IDENTITY = Normalisation((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def normalise_into(bgr: np.ndarray, norm: Normalisation, out: np.ndarray) -> None:
    """BGR HWC uint8 -> normalised RGB CHW float32, written into ``out`` (3, H, W)."""
    h, w = bgr.shape[:2]
    if bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected a BGR image of shape (H, W, 3), got {bgr.shape}")
    if out.shape != (3, h, w) or out.dtype != np.float32:
        raise ValueError(f"tensor buffer must be float32 {(3, h, w)}, got {out.dtype} {out.shape}")
    scale, offset = norm.scale, norm.offset
    for c in range(3):  # channel 0 of the tensor is R = channel 2 of BGR
        np.multiply(bgr[:, :, 2 - c], scale[c], out=out[c], casting="unsafe")
        out[c] += offset[c]


def softmax(logits: Sequence[float] | np.ndarray) -> np.ndarray:
    """Numerically stable softmax of one vector, float64."""
    x = np.asarray(logits, np.float64)
    e = np.exp(x - x.max())
    out: np.ndarray = e / e.sum()
    return out


class InputFitter:
    """One model's input, reused frame after frame: fits a BGR frame of any size into it (the plan of each frame
    size computed once) and normalises it. The classifier and the anomaly model prepare frames with it."""

    def __init__(self, input_w: int, input_h: int, resize: ResizeMode, interpolation: Interpolation,
                 normalisation: Normalisation) -> None:
        self._size = (input_w, input_h)
        self._resize, self._interpolation, self._normalisation = resize, interpolation, normalisation
        self._canvas = np.zeros((input_h, input_w, 3), np.uint8)
        self._tensor = np.zeros((1, 3, input_h, input_w), np.float32)
        self._plans: dict[tuple[int, int], InputPlan] = {}

    def fit(self, image: np.ndarray) -> tuple[np.ndarray, InputPlan]:
        """Fit ``image`` (BGR HxWx3 uint8) into the reused input tensor; returns (tensor, plan)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a BGR image of shape (H, W, 3), got {image.shape}")
        h, w = image.shape[:2]
        plan = self._plans.get((w, h))
        if plan is None:
            plan = plan_input(w, h, *self._size, self._resize)
            self._plans[(w, h)] = plan
        resize_into(image, plan, self._canvas, self._interpolation)
        normalise_into(self._canvas, self._normalisation, self._tensor[0])
        return self._tensor, plan
