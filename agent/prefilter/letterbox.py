"""Letterbox pre-processing, the same arithmetic as ultralytics' ``LetterBox``
(``auto=False, scaleup=True, center=True``, grey 114 padding, INTER_LINEAR), so
boxes match the model's training. Pure numpy/OpenCV.

    r       = min(H_in / h, W_in / w)
    new     = (round(w * r), round(h * r))
    dw, dh  = (W_in - new_w) / 2, (H_in - new_h) / 2
    left    = round(dw - 0.1), top = round(dh - 0.1)

A box in model-input pixels maps back with ``x = (x - left) / r`` (and y likewise).

The agent's hot path is :func:`letterbox_to_tensor`: one resize into a reused scratch image, a split into
its three colour planes and, per plane, one table look-up (``cv2.LUT`` with ``TO_FLOAT``, the 256 values
``v / 255`` as float32) written straight into the model's input tensor in RGB order, the grey border
painted only when a slot's frame size changes; the same numbers as :func:`letterbox_into` followed by
:func:`to_nchw_float`, bit for bit (the table holds exactly the quotients the division gives), and about
quicker than one ``np.divide`` over the transposed image (``scripts/bench_letterbox.py``).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

PAD_VALUE = 114
_255 = np.float32(255.0)  # a true division, as ultralytics does: the same float input, bit for bit
PAD_FLOAT = np.float32(PAD_VALUE) / _255  # the border in the float tensor, as to_nchw_float computes it
TO_FLOAT: np.ndarray = np.divide(np.arange(256, dtype=np.float32), _255)
"""uint8 -> float32 in 0..1: ``TO_FLOAT[v]`` is ``np.float32(v) / 255``, the division :func:`to_nchw_float` does."""
TO_FLOAT.flags.writeable = False


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """Where a source image lands inside the model input."""

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int
    scale: float
    new_w: int
    new_h: int
    left: int
    top: int


def plan_letterbox(src_w: int, src_h: int, dst_w: int, dst_h: int) -> Letterbox:
    if min(src_w, src_h, dst_w, dst_h) <= 0:
        raise ValueError(f"image sizes must be positive, got source {src_w}x{src_h}, input {dst_w}x{dst_h}")
    r = min(dst_h / src_h, dst_w / src_w)
    new_w, new_h = int(round(src_w * r)), int(round(src_h * r))
    dw, dh = (dst_w - new_w) / 2, (dst_h - new_h) / 2
    return Letterbox(src_w, src_h, dst_w, dst_h, r, new_w, new_h, int(round(dw - 0.1)), int(round(dh - 0.1)))


def letterbox_into(image: np.ndarray, plan: Letterbox, out: np.ndarray) -> None:
    """Resize ``image`` (BGR HxWx3 uint8) into the preallocated ``out`` (dst_h x dst_w x 3),
    grey padding around it. One resize, written straight into ``out``'s window."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a BGR image of shape (H, W, 3), got {image.shape}")
    if image.shape[:2] != (plan.src_h, plan.src_w):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, plan is for {plan.src_w}x{plan.src_h}")
    if out.shape != (plan.dst_h, plan.dst_w, 3):
        raise ValueError(f"output buffer must be {(plan.dst_h, plan.dst_w, 3)}, got {out.shape}")
    out.fill(PAD_VALUE)
    window = out[plan.top:plan.top + plan.new_h, plan.left:plan.left + plan.new_w]
    if (plan.new_w, plan.new_h) == (plan.src_w, plan.src_h):
        window[...] = image
    else:
        cv2.resize(image, (plan.new_w, plan.new_h), dst=window, interpolation=cv2.INTER_LINEAR)


def to_nchw_float(letterboxed: np.ndarray, out: np.ndarray) -> None:
    """BGR HWC uint8 -> RGB CHW float32 in 0..1, written into ``out`` (3, H, W)."""
    h, w = letterboxed.shape[:2]
    if out.shape != (3, h, w) or out.dtype != np.float32:
        raise ValueError(f"tensor buffer must be float32 {(3, h, w)}, got {out.dtype} {out.shape}")
    for c in range(3):  # channel 0 of the tensor is R = channel 2 of BGR
        np.divide(letterboxed[:, :, 2 - c], _255, out=out[c], casting="unsafe")


def letterbox_to_tensor(image: np.ndarray, plan: Letterbox, out: np.ndarray, scratch: np.ndarray | None,
                        *, border_painted: bool = False) -> None:
    """Letterbox ``image`` (BGR HxWx3 uint8) into the float32 tensor ``out`` (3, dst_h, dst_w), RGB in 0..1.

    One resize into ``scratch`` (new_h x new_w x 3 uint8, reused; None when the image needs no resize),
    then one pass converting that window into ``out``. The grey border around it is painted unless
    ``border_painted`` says ``out`` still holds it from a frame of the same plan.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a BGR image of shape (H, W, 3), got {image.shape}")
    if image.shape[:2] != (plan.src_h, plan.src_w):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, plan is for {plan.src_w}x{plan.src_h}")
    if out.shape != (3, plan.dst_h, plan.dst_w) or out.dtype != np.float32:
        raise ValueError(f"tensor buffer must be float32 {(3, plan.dst_h, plan.dst_w)}, got {out.dtype} {out.shape}")
    if (plan.new_w, plan.new_h) == (plan.src_w, plan.src_h):
        resized = image
    else:
        if scratch is None or scratch.shape != (plan.new_h, plan.new_w, 3):
            raise ValueError(f"scratch image must be {(plan.new_h, plan.new_w, 3)} uint8, got "
                             f"{None if scratch is None else scratch.shape}")
        cv2.resize(image, (plan.new_w, plan.new_h), dst=scratch, interpolation=cv2.INTER_LINEAR)
        resized = scratch
    window_to_tensor(resized, plan, out, border_painted=border_painted)


def window_to_tensor(resized: np.ndarray, plan: Letterbox, out: np.ndarray, *, border_painted: bool = False) -> None:
    """Write ``resized`` (BGR new_h x new_w x 3 uint8: the source already scaled to the letterbox's window, e.g.
    by the decoder's swscale, :meth:`agent.core.picture.Picture.scaled_bgr`) into the float32 tensor ``out``
    (3, dst_h, dst_w), RGB in 0..1, the grey border painted unless ``border_painted``."""
    if resized.ndim != 3 or resized.shape != (plan.new_h, plan.new_w, 3):
        raise ValueError(f"the window image must be {(plan.new_h, plan.new_w, 3)}, got {resized.shape}")
    if out.shape != (3, plan.dst_h, plan.dst_w) or out.dtype != np.float32:
        raise ValueError(f"tensor buffer must be float32 {(3, plan.dst_h, plan.dst_w)}, got {out.dtype} {out.shape}")
    if not border_painted:
        out.fill(PAD_FLOAT)
    window = out[:, plan.top:plan.top + plan.new_h, plan.left:plan.left + plan.new_w]
    if out.strides[2] != out.itemsize:  # columns cv2 cannot address (a strided view): the division, as a view
        np.divide(resized.transpose(2, 0, 1)[::-1], _255, out=window, casting="unsafe")
        return
    # BGR HWC -> three contiguous planes, then each plane through the table straight into its RGB channel of
    # the tensor (cv2 writes into the window's rows in place)
    planes = cv2.split(resized)
    for c in range(3):  # channel 0 of the tensor is R = plane 2 of BGR
        cv2.LUT(planes[2 - c], TO_FLOAT, dst=window[c])


def boxes_to_source(boxes: np.ndarray, plan: Letterbox) -> np.ndarray:
    """Map xyxy boxes (N, 4) from model-input pixels back to source pixels, clipped."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {boxes.shape}")
    out: np.ndarray = np.subtract(boxes, np.array([plan.left, plan.top, plan.left, plan.top], np.float32),
                                  dtype=np.float32)
    out /= np.float32(plan.scale)
    np.clip(out, 0, np.array([plan.src_w, plan.src_h, plan.src_w, plan.src_h], np.float32), out=out)
    return out
