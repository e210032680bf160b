"""The ``images:`` section of the agent's config: the JPEGs kept for audits (:mod:`agent.outputs.images`).

Off by default. When on, every frame whose verdict is in ``verdicts`` (default: defect and uncertain) is kept as
a JPEG with its event id, and a sample of the passes (``pass_every_n`` or ``pass_per_minute``). Each camera's
images are kept for at most ``max_days`` and ``max_bytes``, whichever is reached first, the oldest evicted
first. ``cameras`` overrides the limits, the pass sample and the JPEG's quality and width per camera id. A
change needs a restart.
"""

from __future__ import annotations

import pathlib
from typing import Annotated, Literal

from pydantic import Field, model_validator

from agent.config.base import Strict

__all__ = ["CameraImagesConfig", "ImagesConfig", "Retention"]

Verdict = Literal["pass", "defect", "uncertain"]

_GB = 1024 ** 3


class CameraImagesConfig(Strict):
    """One camera's overrides of the ``images:`` limits, pass sample and JPEG (unset: the section's value)."""

    enabled: bool | None = Field(default=None, description="keep this camera's images (default: images.enabled)")
    max_days: Annotated[float, Field(gt=0.0, le=3650.0)] | None = None
    max_bytes: Annotated[int, Field(ge=1024 * 1024)] | None = None
    pass_every_n: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    pass_per_minute: Annotated[float, Field(ge=0.0, le=6000.0)] | None = None
    quality: Annotated[int, Field(ge=30, le=100)] | None = None
    max_width: Annotated[int, Field(ge=0, le=16384)] | None = Field(
        default=None, description="scale this camera's images down to this width; 0: full resolution")


class Retention(Strict):
    """What applies to one camera: the section's values with the camera's overrides."""

    enabled: bool
    max_days: float
    max_bytes: int
    pass_every_n: int
    pass_per_minute: float
    quality: int
    max_width: int | None  # None: full resolution


class ImagesConfig(Strict):
    """Images kept for audits; see the module doc and docs/images.md."""

    enabled: bool = False
    dir: pathlib.Path | None = Field(default=None, description=(
        "where the images and their index live (default: images/ in the agent's state directory)"))
    verdicts: list[Verdict] = Field(default_factory=lambda: ["defect", "uncertain"],  # type: ignore[arg-type]
                                    description="verdicts whose every frame is kept")
    pass_every_n: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        default=0, description="also keep 1 in N passes per camera (0: none by count)")
    pass_per_minute: Annotated[float, Field(ge=0.0, le=6000.0)] = Field(
        default=0.0, description="also keep at most this many passes per minute per camera (0: none by time)")
    max_days: Annotated[float, Field(gt=0.0, le=3650.0)] = Field(
        default=30.0, description="days an image is kept; older ones are deleted (checked once a minute)")
    max_bytes: Annotated[int, Field(ge=1024 * 1024)] = Field(
        default=10 * _GB, description="bytes of images kept per camera; the oldest are deleted to stay under it")
    min_free_bytes: Annotated[int, Field(ge=0)] = Field(
        default=512 * 1024 * 1024, description=(
            "free space to leave on the images' filesystem; below it images are not written (reported, "
            "never fatal)"))
    quality: Annotated[int, Field(ge=30, le=100)] = Field(default=90, description="JPEG quality")
    max_width: Annotated[int, Field(ge=64, le=16384)] | None = Field(
        default=None, description="scale images down to this width; null keeps the full resolution")
    reuse_snapshot: bool = Field(default=False, description=(
        "when a snapshot is rendered for the frame (snapshots:), keep its JPEG (annotated, the snapshot's "
        "size and quality) instead of encoding the frame again"))
    queue_size: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=16, description="frames waiting for the writer thread; past it a frame's image is not kept "
        "(counted) and its event carries no image")
    cameras: dict[str, CameraImagesConfig] = Field(default_factory=dict, description=(
        "per camera id: overrides of enabled, max_days, max_bytes, pass_every_n, pass_per_minute, quality, "
        "max_width (0: full resolution)"))

    @model_validator(mode="after")
    def _one_pass_rule(self) -> ImagesConfig:
        rules = [("images", self.pass_every_n, self.pass_per_minute),
                 *((f"images.cameras.{k}", v.pass_every_n, v.pass_per_minute) for k, v in self.cameras.items())]
        for where, every, per_minute in rules:
            if (every or 0) > 0 and (per_minute or 0.0) > 0:
                raise ValueError(f"{where}: pass_every_n ({every}) and pass_per_minute ({per_minute}) are both set; "
                                 "keep passes by one rule, set the other to 0")
        return self

    def for_camera(self, camera: str) -> Retention:
        """The limits and pass sample for ``camera``."""
        o = self.cameras.get(camera, CameraImagesConfig())
        every, per_minute = self.pass_every_n, self.pass_per_minute
        if o.pass_every_n is not None or o.pass_per_minute is not None:  # the camera's own rule replaces the section's
            every, per_minute = o.pass_every_n or 0, o.pass_per_minute or 0.0
        return Retention(enabled=self.enabled if o.enabled is None else o.enabled,
                         max_days=o.max_days or self.max_days, max_bytes=o.max_bytes or self.max_bytes,
                         pass_every_n=every, pass_per_minute=per_minute, quality=o.quality or self.quality,
                         max_width=self.max_width if o.max_width is None else (o.max_width or None))

    def unknown_cameras(self, known: set[str]) -> list[str]:
        """Problems for ``cameras`` keys that name no configured camera."""
        return [f"images.cameras.{cam}: no camera with id {cam!r} is configured (cameras: {', '.join(sorted(known))})"
                for cam in self.cameras if cam not in known]

    @property
    def any_enabled(self) -> bool:
        return self.enabled or any(c.enabled for c in self.cameras.values())
