"""The camera's config: its source and rate, and what it overrides of the top level (triage band, learn mode,
escalation rate, zones, PLC). Re-exported by :mod:`agent.config.models`."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from agent.config.anomaly import AnomalyBandConfig
from agent.config.base import Strict
from agent.config.escalation import RateLimitConfig
from agent.config.plc import CameraPlcConfig
from agent.config.zones import ZonesConfig

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-64 characters of letters, digits, '_', '.', '-' "
            "(it becomes part of MQTT topics, where '+', '#' and '/' are not allowed)"
        )
    return value


class TriageConfig(Strict):
    """Confidence band. Detector: a detection >= accept is trusted, < reject is dropped,
    anything in between makes the frame uncertain. Classifier: the frame is decided when
    the top class has probability >= accept and leads the runner-up by >= margin
    (``pass_label`` -> pass, any other class -> defect); otherwise it is uncertain."""

    accept: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6
    reject: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25
    margin: Annotated[float, Field(ge=0.0, le=1.0, description=(
        "classifiers: least lead of the top class's probability over the runner-up's for a decided frame"))] = 0.2
    pass_label: str = Field(default="pass", min_length=1, description=(
        "classifiers: the class that means a good frame; every other class is a defect"))
    anomaly: AnomalyBandConfig = AnomalyBandConfig()

    @model_validator(mode="after")
    def _band(self) -> TriageConfig:
        if self.reject > self.accept:
            raise ValueError(f"reject ({self.reject}) must not be above accept ({self.accept})")
        return self


class LearnConfig(Strict):
    """Learn mode (a camera with no prefilter for its line yet): which frames go to the VLM. A frame is sent
    when the camera's schedule is due (``sample_per_minute``), or when the scene changed (its perceptual hash
    is more than ``scene_change_bits`` of 63 bits away from the last frame sent) while the scene-change budget
    (``scene_changes_per_minute``) lasts. Every other frame is skipped, counted, and not published."""

    sample_per_minute: Annotated[float, Field(ge=0.0, le=6000.0)] = Field(
        default=6.0, description="frames sent on schedule per minute, whatever the scene does; 0: none")
    scene_change_bits: Annotated[int, Field(ge=1, le=63)] | None = Field(
        default=12, description="a frame whose hash differs from the last frame sent in more than this many of "
        "63 bits is a scene change (camera noise flips 0-2, a new scene 26-38); None: scene changes are not sent")
    scene_changes_per_minute: Annotated[float, Field(ge=0.0, le=6000.0)] = Field(
        default=12.0, description="most scene-change frames sent per minute (after a quiet spell, up to "
        "scene_change_burst at once); past it they are skipped as skipped_rate")
    scene_change_burst: Annotated[int, Field(ge=1, le=100)] = 3


CameraMode = Literal["inspect", "learn"]
Decoder = Literal["auto", "pyav", "opencv"]
HwAccel = Literal["none", "auto", "cuda", "qsv", "vaapi", "videotoolbox", "d3d11va", "amf", "drm"]
DecoderScaling = Literal["none", "planes", "area", "bilinear", "point", "fast_bilinear", "bicubic", "lowres"]
DEFAULT_DECODER_SCALING: DecoderScaling = "none"  # one pass changes 1-5 % of verdicts: docs/openvino.md


class CameraConfig(Strict):
    id: str
    source: str = Field(description="synthetic://conveyor[?seed=N&fps=F&frames=N], a video file, "
                        "rtsp:// or http(s):// URL, a V4L2 device (/dev/videoN or its index)")
    fps: Annotated[float, Field(gt=0, le=240)] | None = Field(
        default=None, description="most frames per second to inspect; None = as the source delivers")
    realtime: bool | None = Field(
        default=None,
        description="keep only the newest frame (live cameras) instead of every frame (files); "
        "default: true for cameras and URLs, false for files and synthetic sources")
    triage: TriageConfig | None = None
    escalation_rate: RateLimitConfig | None = Field(
        default=None, description="overrides escalation.rate_per_camera for this camera")
    reconnect_initial_s: Annotated[float, Field(gt=0)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0)] = 30.0
    record: bool | None = Field(
        default=None, description="keep this camera's frames the VLM answered (and a sample of confident ones) "
        "as training data (see `dataset`); None: dataset.record")
    mode: CameraMode | None = Field(
        default=None, description="inspect: the prefilter inspects every frame; learn: no prefilter for this "
        "line yet, a sample of the frames goes to the VLM (see `learn`); None: the top-level mode")
    learn: LearnConfig | None = Field(default=None, description="overrides the top-level learn for this camera")
    zones: ZonesConfig | None = Field(default=None, description="polygons to inspect and to ignore (docs/zones.md)")
    plc: CameraPlcConfig | None = Field(default=None, description="results to a PLC (see plc and docs/plc.md)")
    decoder: Decoder = Field(default="auto", description="what decodes files and rtsp/http streams: pyav (the "
                             "`video` extra), opencv, or auto: pyav where installed, else opencv (docs/openvino.md)")
    decode_threads: Annotated[int, Field(ge=0, le=16)] = Field(
        default=1, description="pyav: decoder threads per camera; 1 decodes in the camera's own thread, "
        "0: FFmpeg's frame threads, one per core")
    skip_deblocking: bool = Field(default=False, description="pyav: skip H.264/HEVC's deblocking filter "
                                  "(cheaper decoding, a slightly blockier picture; docs/openvino.md)")
    hwaccel: HwAccel = Field(default="none", description="pyav: decode on this device (cuda, qsv, ...; auto: the "
                             "first that opens), else on the CPU with one warning")
    decoder_scaling: DecoderScaling = Field(
        default=DEFAULT_DECODER_SCALING, description="pyav: a detector's input is scaled straight from the decoded "
        "picture by swscale with this interpolation, the full-size BGR frame made only when something needs it; "
        "lowres: MJPEG decoded small by FFmpeg, the full frame decoded again when needed; "
        "none: the BGR frame resized by OpenCV (docs/openvino.md \"Decoding\")")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _check_id(v, "camera id")

    @model_validator(mode="after")
    def _pyav_only(self) -> CameraConfig:
        if self.decoder == "opencv":
            given = [f"{name}: {getattr(self, name)}" for name, default in
                     (("decode_threads", 1), ("skip_deblocking", False), ("hwaccel", "none"))
                     if getattr(self, name) != default]
            if given:
                raise ValueError(f"{', '.join(given)} needs decoder: pyav (or auto); OpenCV's decoder takes no "
                                 "decoding options")
            if "decoder_scaling" in self.model_fields_set and self.decoder_scaling != "none":
                raise ValueError(f"decoder_scaling: {self.decoder_scaling} needs decoder: pyav (or auto); with "
                                 "OpenCV's decoder the model's input is resized from the BGR frame (leave it out, "
                                 "or set none)")
        return self
