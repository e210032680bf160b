"""``edge-agent doctor``'s ``images`` row: the audit images' folder (``images:``, docs/images.md) can be written,
its filesystem has room above ``images.min_free_bytes`` and for the cameras' limits, and what it holds now."""

from __future__ import annotations

import os
import pathlib
import shutil
import sqlite3
from collections.abc import Mapping

from agent.config.models import AgentConfig
from agent.errors import ImagesError
from agent.ops.check import Check
from agent.outputs.images.keeper import images_dir
from agent.outputs.images.store import INDEX, ImageStore

__all__ = ["check_images"]

_MB = 1024 * 1024


def check_images(config: AgentConfig, env: Mapping[str, str]) -> Check:
    images = config.images
    cameras = [c.id for c in config.cameras if images.for_camera(c.id).enabled]
    unknown = images.unknown_cameras({c.id for c in config.cameras})
    if unknown:
        return Check("images", "FAIL", "; ".join(unknown), "fix images.cameras: its keys are camera ids")
    if not cameras:
        return Check("images", "SKIP", "images.enabled is false: no images are kept for audits")
    root = images_dir(config, env)
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        return Check("images", "FAIL", f"{root}: {existing} is not writable by this user",
                     "give the agent's user the folder (the unit's StateDirectory= does) or set images.dir")
    free = shutil.disk_usage(existing).free
    used = _used(root)
    limits = sum(images.for_camera(c).max_bytes for c in cameras)
    detail = (f"{root}: {len(cameras)} camera(s), {sum(used.values()) // _MB} MB kept now, limits "
              f"{limits // _MB} MB in all, {free // _MB} MB free")
    if free < images.min_free_bytes:
        return Check("images", "FAIL", f"{detail}: under images.min_free_bytes ({images.min_free_bytes // _MB} MB); "
                     "images are not kept (the agent inspects and publishes on)",
                     "free space on that filesystem, lower the limits or move images.dir")
    room = free - images.min_free_bytes + sum(used.values())
    if limits > room:
        return Check("images", "WARN", f"{detail}: the limits need more than the room there is ({room // _MB} MB "
                     "above images.min_free_bytes)", "lower images.max_bytes (or per camera) or move images.dir; "
                     "when the disk fills, images are not kept and /healthz says so")
    return Check("images", "OK", detail)


def _used(root: pathlib.Path) -> dict[str, int]:
    """camera -> bytes kept now (nothing when the folder has no index yet)."""
    if not (root / INDEX).is_file():
        return {}
    try:
        store = ImageStore.open(root, create=False, repair=False)
    except ImagesError:
        return {}
    try:
        return {c: b for c, (_n, b) in store.totals().items()}
    except sqlite3.Error:
        return {}
    finally:
        store.close()
