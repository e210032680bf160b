"""How long the fake Ollama takes per answer: a model of a 7B vision model's service time on one GPU.

Published Ollama figures for 7B vision models (LLaVA 7B, Qwen2.5-VL 7B) are about 1 to 10 s per image on one
RTX-class GPU, one request at a time unless ``OLLAMA_NUM_PARALLEL`` is raised (issue #21; api-facts 1.10). A
:class:`ServiceTime` draws each answer's time uniformly from ``mean_s * (1 - spread)`` to ``mean_s * (1 + spread)``
(a 2 s server: 1 to 3 s), times ``scale``, so that a test can run the same shape of load faster by a stated factor
(``scale=0.05``: a 2 s server answers in 50 to 150 ms).

    fake = FakeOllama(service_time=ServiceTime(mean_s=4.0, scale=0.05, seed=1))
"""

from __future__ import annotations

import dataclasses
import random
import threading

__all__ = ["ServiceTime"]


@dataclasses.dataclass
class ServiceTime:
    """Seconds per answer, drawn per call (see the module doc); thread-safe, repeatable by ``seed``."""

    mean_s: float
    """The unscaled mean: 1 to 10 s for a 7B vision model on one RTX-class GPU."""
    scale: float = 1.0
    spread: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mean_s <= 0 or self.scale <= 0 or not 0 <= self.spread < 1:
            raise ValueError(f"ServiceTime needs mean_s > 0, scale > 0 and 0 <= spread < 1; got {self}")
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    @property
    def mean_scaled_s(self) -> float:
        return self.mean_s * self.scale

    def __call__(self) -> float:
        with self._lock:
            factor = self._random.uniform(1 - self.spread, 1 + self.spread)
        return self.mean_s * factor * self.scale
