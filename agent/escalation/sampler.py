"""Learn mode: which frames of a camera with no prefilter go to the VLM, and what became of every frame.

A camera in learn mode (``mode: learn``, or ``model: null`` for all) has no model for its line yet; a
sample of its frames is sent to the gateway, whose answers are published (``decided_by: vlm``) and, when the
camera records, become the first training set. :class:`LearnSampler` decides per frame, pure logic with the
time passed in (``learn`` / ``cameras[].learn`` in the config), the first rule that applies:

1. **schedule**: the camera's schedule is due (a token bucket of ``sample_per_minute``, burst 1): sent,
   whatever the scene does (so a line that looks the same all day is still asked about now and then);
2. **scene change**: the frame's perceptual hash (:func:`agent.escalation.dedupe.phash`) differs from the
   last frame sent in more than ``scene_change_bits`` of 63 bits: sent while the scene-change budget lasts
   (``scene_changes_per_minute``, burst ``scene_change_burst``), else skipped as ``skipped_rate``;
3. otherwise skipped as ``skipped_unchanged``.

The first frame of a camera is always sent. A frame sent goes through the escalator like an uncertain frame
(its rate limit and near-duplicate cache apply: ``escalation_rate`` still bounds the calls) and is published
with the escalation status it ends with: ``answered`` (the VLM's verdict and tags, ``decided_by: vlm``),
``cached``, or ``uncertain`` with ``unavailable``/``timeout``/``rate_limited``/... and the reason. Its event's
``prefilter.model`` is :data:`LEARN_MODEL_ID` with latency 0: no model looked at it.

**Skipped frames are not published**: no tag event claims a verdict for a frame nobody looked at. They are
counted: :class:`LearnTally` holds, per learning camera, every frame's fate (``sampled_schedule``,
``sampled_scene_change``, ``skipped_rate``, ``skipped_unchanged``) and the escalation status each sampled
frame was first published with, for the stats topic, the retained status and ``/metrics``. The fates of a
camera add up to the frames the inference loop took from it.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from agent.config.models import LearnConfig
from agent.core.event import TagEvent
from agent.escalation.dedupe import hamming, phash
from agent.escalation.ratelimit import TokenBucket

__all__ = ["FATES", "LEARN_MODEL_ID", "LearnSampler", "LearnTally"]

LEARN_MODEL_ID = "none:learn-mode"
"""``prefilter.model`` of a learn-mode frame's event: no prefilter inspected it."""

Fate = Literal["sampled_schedule", "sampled_scene_change", "skipped_rate", "skipped_unchanged"]
FATES: tuple[Fate, ...] = ("sampled_schedule", "sampled_scene_change", "skipped_rate", "skipped_unchanged")


@dataclasses.dataclass
class _CameraState:
    config: LearnConfig
    schedule: TokenBucket | None
    changes: TokenBucket | None
    last_hash: int | None = None


class LearnSampler:
    """Per camera: send this frame to the VLM or not (see the module doc). Each call brings the camera's
    settings (a frame is decided by the config it was taken under, also across a reload); a camera whose
    settings changed starts afresh. Thread-safe."""

    def __init__(self) -> None:
        self._states: dict[str, _CameraState] = {}
        self._lock = threading.Lock()

    def decide(self, camera: str, config: LearnConfig, image: np.ndarray, now: float) -> Fate:
        """The fate of ``camera``'s frame ``image`` at monotonic time ``now`` under ``config``."""
        frame_hash = phash(image)  # outside the lock: the only costly step
        with self._lock:
            return self._decide(camera, config, frame_hash, now)

    def _decide(self, camera: str, config: LearnConfig, frame_hash: int, now: float) -> Fate:
        state = self._states.get(camera)
        if state is None or state.config != config:
            state = self._states[camera] = _CameraState(
                config,
                TokenBucket(config.sample_per_minute, 1) if config.sample_per_minute > 0 else None,
                TokenBucket(config.scene_changes_per_minute, config.scene_change_burst)
                if config.scene_changes_per_minute > 0 and config.scene_change_bits is not None else None)
        first = state.last_hash is None
        fate: Fate
        if first or (state.schedule is not None and state.schedule.take(now)):
            fate = "sampled_schedule"
        elif state.last_hash is not None and config.scene_change_bits is not None \
                and hamming(frame_hash, state.last_hash) > config.scene_change_bits:
            fate = "sampled_scene_change" if state.changes is not None and state.changes.take(now) else "skipped_rate"
        else:
            fate = "skipped_unchanged"
        if first and state.schedule is not None:
            state.schedule.take(now)  # the first frame was this period's sample
        if fate.startswith("sampled"):
            state.last_hash = frame_hash
        return fate


class LearnTally:
    """Thread-safe counts per learning camera: every frame's fate and every sampled frame's escalation status."""

    def __init__(self, cameras: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, collections.Counter[str]] = {}
        self.set_cameras(cameras)

    def set_cameras(self, cameras: Iterable[str]) -> None:
        """The learning cameras (a reload); a camera that stops learning keeps its counts until restart."""
        with self._lock:
            for camera in cameras:
                self._counts.setdefault(camera, collections.Counter({f: 0 for f in FATES}))

    @property
    def cameras(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._counts)

    def fate(self, camera: str, fate: Fate) -> None:
        with self._lock:
            self._counts.setdefault(camera, collections.Counter({f: 0 for f in FATES}))[fate] += 1

    def outcome(self, event: TagEvent) -> None:
        """A published event: counted when it is a learn-mode frame's first publication."""
        if event.model_id != LEARN_MODEL_ID or event.revision != 1:
            return
        with self._lock:
            self._counts.setdefault(event.camera, collections.Counter({f: 0 for f in FATES}))[
                event.escalation.status] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{camera: {fate or escalation status: frames}}``; the four fates are always present."""
        with self._lock:
            return {camera: dict(counts) for camera, counts in self._counts.items()}

    def status_fields(self) -> dict[str, Any]:
        """What the retained status carries: ``{"learn": {camera: counts}}`` (nothing while no camera learns)."""
        snapshot = self.snapshot()
        return {"learn": snapshot} if snapshot else {}
