"""Train :class:`~agent.tooling.training.anomaly.net.AnomalyNet` on good frames and generic synthetic anomalies.

Each step takes ``batch`` random crops of the good frames (at the model's input scale); half of them get
1-3 anomalies from :mod:`.synth` and the net learns to segment them (binary cross-entropy on the map, at 1/4 of
the input, plus one on the crop's largest logit so the image score learns too). The other half stay good, so
what is normal in the frames (edges of parts, belt seams, texture) is learnt as normal.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agent.tooling.training.anomaly.synth import make_anomalous

ANOMALOUS_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class FitSettings:
    steps: int = 1500
    batch: int = 16
    crop: int = 128  # pixels at the model's input scale, a multiple of 4
    lr: float = 2e-3
    width: int = 32
    seed: int = 0
    threads: int = 2
    time_s: float | None = None  # stop after this many seconds of training even if steps are left
    grey: bool = False


@dataclasses.dataclass(frozen=True)
class StepRow:
    step: int
    steps: int
    loss: float
    elapsed_s: float

    def line(self) -> str:
        return f"step {self.step}/{self.steps}  loss {self.loss:.4f}  {self.elapsed_s:.0f} s"


def learning_rate(settings: FitSettings, step: int, elapsed_s: float) -> float:
    """Linear warm-up over the first 5 %, then cosine down to 2 % of ``lr``; progress is the larger of the steps
    done and the time used, so a run stopped by its time budget still ends at a low rate."""
    done = step / settings.steps
    if settings.time_s:
        done = max(done, elapsed_s / settings.time_s)
    done = min(done, 1.0)
    if done < 0.05:
        return settings.lr * max(done / 0.05, 0.02)
    return settings.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (done - 0.05) / 0.95)))


def sample_batch(rng: np.random.Generator, frames: Sequence[np.ndarray], settings: FitSettings
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(images (B, crop, crop, 3) uint8, masks (B, crop, crop) float32) of crops, half with anomalies."""
    c = settings.crop
    images = np.empty((settings.batch, c, c, 3), np.uint8)
    masks = np.zeros((settings.batch, c, c), np.float32)
    for i in range(settings.batch):
        frame = frames[int(rng.integers(0, len(frames)))]
        h, w = frame.shape[:2]
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        crop = frame[y:y + c, x:x + c]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < ANOMALOUS_SHARE:
            donor = frames[int(rng.integers(0, len(frames)))]
            crop, masks[i] = make_anomalous(rng, np.ascontiguousarray(crop), donor, int(rng.integers(1, 4)),
                                            settings.grey)
        images[i] = crop
    return images, masks


def fit(frames: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float], settings: FitSettings,
        report: Callable[[StepRow], None] | None = None) -> object:
    """Train a net on ``frames`` (BGR uint8 at the model's input size, each at least ``crop`` wide and high);
    returns the trained ``AnomalyNet`` in eval mode."""
    import torch
    import torch.nn.functional as F

    from agent.tooling.training.anomaly.net import anomaly_net

    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    rng = np.random.default_rng(settings.seed)
    net = anomaly_net(settings.width)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=1e-4)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255
    t0, running = time.monotonic(), 0.0
    net.train()
    for step in range(1, settings.steps + 1):
        images, masks = sample_batch(rng, frames, settings)
        x = (torch.from_numpy(images[..., ::-1].copy()).permute(0, 3, 1, 2).float() - m) / s  # BGR -> RGB
        target = F.avg_pool2d(torch.from_numpy(masks)[:, None], 4)
        target = (target > 0.25).float()
        logits = net(x)
        pixel = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(4.0))
        image = F.binary_cross_entropy_with_logits(logits.amax(dim=(1, 2, 3)), target.amax(dim=(1, 2, 3)))
        loss: Any = pixel + 0.2 * image
        for group in opt.param_groups:
            group["lr"] = learning_rate(settings, step, time.monotonic() - t0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running = 0.95 * running + 0.05 * float(loss.detach()) if step > 1 else float(loss.detach())
        elapsed = time.monotonic() - t0
        if report is not None and (step % 50 == 0 or step == settings.steps):
            report(StepRow(step, settings.steps, running, elapsed))
        if settings.time_s is not None and elapsed > settings.time_s:
            if report is not None:
                report(StepRow(step, settings.steps, running, elapsed))
            break
    net.eval()
    return net
