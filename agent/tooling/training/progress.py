"""One progress line per epoch: epoch/N, losses, the validation metric, elapsed time and ETA. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``; ``42`` -> ``42s``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclasses.dataclass(frozen=True)
class EpochRow:
    """What one epoch did; also a row of the model card's training table."""

    epoch: int  # 1-based
    epochs: int
    losses: Mapping[str, float]  # name -> mean training loss of the epoch
    metrics: Mapping[str, float]  # validation metrics, e.g. mAP50 or accuracy
    elapsed_s: float  # since training started

    def eta_s(self) -> float:
        return self.elapsed_s / self.epoch * (self.epochs - self.epoch)

    def line(self) -> str:
        losses = " ".join(f"{k} {v:.4f}" for k, v in self.losses.items())
        metrics = " ".join(f"val {k} {v:.3f}" for k, v in self.metrics.items())
        parts = [f"epoch {self.epoch}/{self.epochs}", losses, metrics, f"elapsed {duration(self.elapsed_s)}",
                 f"ETA {duration(self.eta_s())}"]
        return "  ".join(p for p in parts if p)

    def as_json(self) -> dict[str, object]:
        return {"epoch": self.epoch, "losses": {k: round(v, 5) for k, v in self.losses.items()},
                "metrics": {k: round(v, 5) for k, v in self.metrics.items()}, "elapsed_s": round(self.elapsed_s, 1)}
