"""A simulated VLM for the fake Ollama: it answers from the ground truth, wrong at a set rate.

A stated simulation, not a claim about LLaVA. :class:`TruthOracle` is a ``FakeOllama(answer_fn=...)``: it
decodes the first image of the chat request (the whole frame, as the gateway sends it), finds the labelled
image it is (the nearest 64x48 grey thumbnail; JPEG re-encoding and downscaling do not move it far), and
answers with that image's truth in the gateway's answer schema. With probability ``error_rate`` per image
(decided by a hash of the seed and the image, so the same image gets the same answer every time it is
asked) the answer is wrong: a defective image is called ``pass``, a good one ``defect`` with one class
chosen by the same hash.

    oracle = TruthOracle.from_yolo(data / "images" / "val", data / "labels" / "val", classes, error_rate=0.05)
    with FakeOllama(answer_fn=oracle) as fake: ...

As a process (``python -m tests.fakes.ollama --truth-scene surface --truth-seed 5 --error-rate 0.05``) it
answers about the frames of a synthetic camera (``synthetic://surface?seed=5``), for trying the gateway and
learn mode by hand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

__all__ = ["TruthOracle"]

_THUMB = (64, 48)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return cv2.resize(grey, _THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)


class TruthOracle:
    """``answer_fn`` for :class:`tests.fakes.ollama.FakeOllama`; see the module doc."""

    def __init__(self, images: Sequence[np.ndarray], truths: Sequence[frozenset[str]], classes: Sequence[str],
                 error_rate: float = 0.0, seed: int = 0) -> None:
        if len(images) != len(truths) or not images:
            raise ValueError(f"expected one truth per image and at least one image, got {len(images)} images "
                             f"and {len(truths)} truths")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate: expected 0..1, got {error_rate}")
        self.thumbs = np.stack([_thumbnail(im) for im in images])
        self.truths = list(truths)
        self.classes = list(classes)
        self.error_rate = error_rate
        self.seed = seed
        self.asked = 0
        self.wrong = 0
        self._lock = threading.Lock()

    @classmethod
    def from_yolo(cls, images_dir: pathlib.Path, labels_dir: pathlib.Path, classes: Sequence[str],
                  error_rate: float = 0.0, seed: int = 0) -> TruthOracle:
        images, truths = [], []
        for path in sorted(images_dir.iterdir()):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                continue
            label = labels_dir / (path.stem + ".txt")
            ids = {int(line.split()[0]) for line in label.read_text().splitlines() if line.strip()} \
                if label.exists() else set()
            images.append(image)
            truths.append(frozenset(classes[i] for i in ids))
        return cls(images, truths, classes, error_rate, seed)

    @classmethod
    def from_scene(cls, scene: str, seeds: Sequence[int], frames: int, error_rate: float = 0.0,
                   seed: int = 0) -> TruthOracle:
        """The first ``frames`` frames of ``synthetic://<scene>?seed=S`` for each seed S, as the agent's camera
        draws them, and their truth (the scene's defect words)."""
        from agent.capture.scenes import get_scene

        known = get_scene(scene)
        images, truths = [], []
        for s in seeds:
            stream = known.stream(s)
            for _ in range(frames):
                image, truth = stream.next_frame()
                images.append(image)
                truths.append(frozenset(d.label for d in truth.defects))
        return cls(images, truths, known.classes, error_rate, seed)

    def _draw(self, index: int, what: str) -> float:
        digest = hashlib.sha256(f"{self.seed}:{index}:{what}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def answer_for(self, index: int) -> dict[str, Any]:
        """The answer about labelled image ``index`` (wrong with probability ``error_rate``)."""
        truth = self.truths[index]
        wrong = self._draw(index, "wrong") < self.error_rate
        if wrong:
            claimed = frozenset() if truth else frozenset(
                {self.classes[int(self._draw(index, "class") * len(self.classes))]})
        else:
            claimed = truth
        with self._lock:
            self.asked += 1
            self.wrong += wrong
        if not claimed:
            return {"verdict": "pass", "tags": [{"label": "part", "confidence": 0.95}], "defects": [],
                    "description": "A clean part on the belt."}
        names = sorted(claimed)
        return {"verdict": "defect", "tags": [{"label": n, "confidence": 0.9} for n in names],
                "defects": [{"type": n, "location": "on the part", "severity": "medium"} for n in names],
                "description": f"The part shows {', '.join(names)}."}

    def nearest(self, image: np.ndarray) -> int:
        return int(np.argmin(np.abs(self.thumbs - _thumbnail(image)).mean(axis=(1, 2))))

    def __call__(self, body: dict[str, Any]) -> str:
        images = [im for m in body.get("messages", []) for im in m.get("images") or []]
        if not images:
            return json.dumps({"verdict": "uncertain", "tags": [], "defects": [], "description": "No image."})
        data = np.frombuffer(base64.b64decode(images[0]), np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None:
            return json.dumps({"verdict": "uncertain", "tags": [], "defects": [], "description": "Unreadable."})
        return json.dumps(self.answer_for(self.nearest(image)))
