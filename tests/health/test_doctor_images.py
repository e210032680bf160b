"""``doctor``'s ``images`` row: off, fine, a full disk (under the free-space floor), limits larger than the room,
a per-camera override naming no camera."""

from __future__ import annotations

import pathlib

import pytest

from agent.config.images import CameraImagesConfig, ImagesConfig
from agent.config.models import AgentConfig, CameraConfig
from agent.ops.doctor_images import check_images

PB = 1024 ** 5


def _config(tmp_path: pathlib.Path, **images: object) -> AgentConfig:
    return AgentConfig(device_id="box", cameras=[CameraConfig(id="cam1", source="synthetic://conveyor")],
                       images=ImagesConfig(dir=tmp_path / "images", **images))  # type: ignore[arg-type]


@pytest.mark.parametrize(("images", "status", "words"), [
    ({}, "SKIP", "images.enabled is false"),  # off by default
    ({"enabled": True, "max_bytes": 1024 * 1024, "min_free_bytes": 0}, "OK", "1 camera(s), 0 MB kept now"),
    ({"enabled": True, "min_free_bytes": PB}, "FAIL", "under images.min_free_bytes"),  # the disk is "full"
    ({"enabled": True, "max_bytes": PB, "min_free_bytes": 0}, "WARN", "the limits need more than the room"),
    ({"enabled": True, "cameras": {"cam7": CameraImagesConfig(max_days=1)}}, "FAIL", "images.cameras.cam7"),
])
def test_images_row(tmp_path: pathlib.Path, images: dict[str, object], status: str, words: str) -> None:
    check = check_images(_config(tmp_path, **images), {})
    assert check.name == "images" and check.status == status and words in check.detail, check
    assert not (tmp_path / "images").exists()  # the doctor looks; it makes nothing
