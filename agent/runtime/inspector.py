"""Frame -> prefilter -> triage -> tag event: the synchronous core the daemon, the demo, batch tagging and the
tests share. No threads, no network (the threads are :mod:`agent.runtime.loop`'s)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from agent.config.models import AgentConfig, CameraConfig
from agent.core.decision import TriageDecision
from agent.core.detections import Detection, PrefilterResult
from agent.core.event import build_event
from agent.core.frame import Frame
from agent.core.inspection import Inspection
from agent.core.picture import Picture
from agent.core.ports import BatchPrefilter, DescribedPrefilter, PicturePrefilter, Prefilter, StagedPrefilter
from agent.core.zones import FrameZones, ZoneReport
from agent.escalation.sampler import LEARN_MODEL_ID, LearnSampler, LearnTally
from agent.triage.policy import decide
from agent.triage.zones import CameraZones, ZoneMask

__all__ = ["FrameInspector"]

_LEARN_DECISION = TriageDecision(verdict="uncertain", tags=())  # a learn-mode frame: nothing decided it yet


class FrameInspector:
    """Frame -> prefilter -> triage -> tag event. No threads, no network.

    Cameras in learn mode (``AgentConfig.learns``) have no prefilter: :meth:`learn` asks ``sampler`` whether
    their frame goes to the VLM (counted in ``tally``, see :mod:`agent.escalation.sampler`). ``prefilter`` may
    be None when every camera learns."""

    def __init__(self, config: AgentConfig, prefilter: Prefilter | None, *, sampler: LearnSampler | None = None,
                 tally: LearnTally | None = None) -> None:
        self._config = config
        self._prefilter = prefilter
        self._cameras: dict[str, CameraConfig] = {c.id: c for c in config.cameras}
        self._learning = {c.id: config.learn_for(c) for c in config.cameras if config.learns(c)}
        if prefilter is None and len(self._learning) < len(self._cameras):
            raise ValueError("a FrameInspector without a prefilter needs every camera in learn mode")
        self._sampler = sampler if sampler is not None else LearnSampler()
        self._tally = tally if tally is not None else LearnTally(self._learning)
        self._zones = {c.id: CameraZones(c.id, c.zones) for c in config.cameras if c.zones is not None}
        # a whole-frame model (classifier; an anomaly model) sees the crop of a camera's zones, a detector the frame
        self._crops = isinstance(prefilter, DescribedPrefilter) and prefilter.info.task != "detect"
        # asked several times a batch by the inference loop: decided once (a protocol check costs ~10 us)
        self._staged = prefilter if isinstance(prefilter, StagedPrefilter) else None
        # a detector letterboxes the whole frame: it gets the frame's picture, which scales itself for it
        self._pictured = prefilter if isinstance(prefilter, PicturePrefilter) and not self._crops else None

    @property
    def tally(self) -> LearnTally:
        return self._tally

    def learns(self, camera_id: str) -> bool:
        """Whether ``camera_id`` is in learn mode (its frames go to :meth:`learn`, not to the prefilter)."""
        return camera_id in self._learning

    def learn(self, frame: Frame, now: float) -> Inspection | None:
        """A learn-mode camera's frame: its inspection (verdict ``uncertain``, no tags, for the VLM) when the
        sampler sends it, None when it is skipped. Either way its fate is counted in the tally."""
        learn = self._learning.get(frame.camera_id)
        if learn is None:
            raise KeyError(f"camera {frame.camera_id!r} is not in learn mode")
        fate = self._sampler.decide(frame.camera_id, learn, frame.image, now)
        self._tally.fate(frame.camera_id, fate)
        if not fate.startswith("sampled"):
            return None
        result = PrefilterResult(model_id=LEARN_MODEL_ID, detections=(), latency_ms=0.0, task="classify")
        event = build_event(
            device=self._config.device_id, camera=frame.camera_id, sequence=frame.sequence,
            captured_at=frame.captured_at, frame_width=frame.width, frame_height=frame.height,
            decision=_LEARN_DECISION, model_id=LEARN_MODEL_ID, prefilter_latency_ms=0.0,
            taxonomy=self._config.loaded_taxonomy,
        )
        return Inspection(frame, result, _LEARN_DECISION, event)

    def inspect(self, frame: Frame) -> Inspection:
        if self._pictured is not None:
            return self._inspection(frame, self._pictured.infer(frame.picture))
        return self._inspection(frame, self._model().infer(self._image_input(frame)))

    def model_input(self, frame: Frame) -> np.ndarray | Picture:
        """What the prefilter is given: for a detector, the frame's picture (asked for the model's input size
        straight from the decoder where it can: :meth:`agent.core.picture.Picture.scaled_bgr`); else
        :meth:`_image_input`."""
        return frame.picture if self._pictured is not None else self._image_input(frame)

    def _image_input(self, frame: Frame) -> np.ndarray:
        """The image a prefilter is given: the frame; for a whole-frame model (a classifier, an anomaly
        model) on a camera with zones, the crop of its inspected area (:meth:`agent.triage.zones.ZoneMask.crop`;
        the whole frame when its zones cannot apply to it). Boxes found in a crop (an anomaly model's regions)
        are moved back into frame pixels before the zones and triage see them."""
        zones = self._zones.get(frame.camera_id) if self._crops else None
        mask = zones.for_frame(frame.width, frame.height) if zones is not None else None
        return mask.crop(frame.image) if isinstance(mask, ZoneMask) else frame.image

    def _model(self) -> Prefilter:
        if self._prefilter is None:
            raise RuntimeError("no prefilter: every camera is in learn mode (a frame reached inspect())")
        return self._prefilter

    def escalation_frame(self, frame: Frame) -> Frame:
        """The frame as the VLM gets it: on a camera with zones, its pixels outside the inspected area filled
        (:meth:`agent.triage.zones.ZoneMask.blank`), so the VLM is not asked about what the camera ignores; the
        frame itself otherwise (and when its zones cannot apply to it)."""
        zones = self._zones.get(frame.camera_id)
        mask = zones.for_frame(frame.width, frame.height) if zones is not None else None
        if not isinstance(mask, ZoneMask):
            return frame
        return dataclasses.replace(frame, picture=Picture(mask.blank(frame.image)))

    def inspect_many(self, frames: Sequence[Frame]) -> list[Inspection]:
        """Frames from several cameras, in one prefilter call where the model takes a batch
        (``infer_batch``, ``max_batch`` > 1); else one call each. Same inspections either way."""
        if not frames:
            return []
        model = self._prefilter
        if len(frames) < 2 or not isinstance(model, BatchPrefilter) or model.max_batch < 2:
            return [self.inspect(frame) for frame in frames]
        if self._pictured is not None:
            results = self._pictured.infer_batch([frame.picture for frame in frames])
        else:
            results = model.infer_batch([self._image_input(frame) for frame in frames])
        return [self._inspection(frame, result) for frame, result in zip(frames, results, strict=True)]

    @property
    def staged(self) -> StagedPrefilter | None:
        """The prefilter, when its call splits into stages the inference loop runs on separate threads."""
        return self._staged

    def inspections(self, frames: Sequence[Frame], results: Sequence[PrefilterResult]) -> list[Inspection]:
        """Triage and events for frames whose prefilter results are known (one result per frame)."""
        if len(frames) != len(results):
            raise ValueError(f"{len(frames)} frames but {len(results)} prefilter results")
        return [self._inspection(frame, result) for frame, result in zip(frames, results, strict=True)]

    def _inspection(self, frame: Frame, result: PrefilterResult) -> Inspection:
        camera = self._cameras.get(frame.camera_id)
        if camera is None:
            raise KeyError(f"frame from unknown camera {frame.camera_id!r}")
        band = self._config.triage_for(camera)
        result, report, applied = self._apply_zones(frame, result, band.reject)
        decision = decide(result, band)
        event = build_event(
            device=self._config.device_id, camera=frame.camera_id, sequence=frame.sequence,
            captured_at=frame.captured_at, frame_width=frame.width, frame_height=frame.height,
            decision=decision, model_id=result.model_id, prefilter_latency_ms=result.latency_ms,
            taxonomy=self._config.loaded_taxonomy, zones=report,
        )
        return Inspection(frame, result, decision, event, applied)

    def _apply_zones(self, frame: Frame, result: PrefilterResult,
                     reject: float) -> tuple[PrefilterResult, ZoneReport | None, FrameZones | None]:
        """The result with the detections outside the camera's zones dropped, what the event says of the zones,
        and the zones as applied (None when the camera has none or they cannot apply to this frame)."""
        zones = self._zones.get(frame.camera_id)
        if zones is None:
            return result, None, None
        mask = zones.for_frame(frame.width, frame.height)
        if not isinstance(mask, ZoneMask):
            return result, zones.report(mask), None
        if self._crops and result.detections:  # an anomaly model's regions are in the crop's pixels
            result = dataclasses.replace(result, detections=_shifted(result.detections, *mask.crop_box[:2]))
        kept, dropped = mask.split(result.detections)
        if dropped:
            result = dataclasses.replace(result, detections=kept)
        report = zones.report(mask, sum(d.confidence >= reject for d in dropped), crop=self._crops)
        return result, report, mask.zones


def _shifted(detections: Sequence[Detection], dx: int, dy: int) -> tuple[Detection, ...]:
    """Boxes found in a crop whose top-left corner is (dx, dy) of the frame, in frame pixels."""
    if dx == 0 and dy == 0:
        return tuple(detections)
    return tuple(d if d.box is None else dataclasses.replace(
        d, box=(d.box[0] + dx, d.box[1] + dy, d.box[2] + dx, d.box[3] + dy)) for d in detections)
