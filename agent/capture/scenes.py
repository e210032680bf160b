"""The synthetic scenes by name: what ``synthetic://<scene>`` and ``dataset synth --scene`` can render.

Each :class:`Scene` says what it draws (its defect classes, most severe first, its default frame size,
whether its frames are grey) and renders stills and streams at a chosen frame size. The conveyor's
rendering is :mod:`agent.capture.synthetic`'s, unchanged (the shipped models were trained on it);
the surface's is :mod:`agent.capture.surface`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import numpy as np

from agent.capture.surface import SURFACE_CLASSES, SURFACE_SEVERITY, SurfaceScene, SurfaceSettings, render_surface
from agent.capture.synthetic import DEFECT_CLASSES, ConveyorScene, SceneSettings, render_still
from agent.core.frame import FrameTruth
from agent.errors import SourceError

__all__ = ["SCENES", "Scene", "SceneStream", "get_scene"]


class SceneStream(Protocol):
    """A scene played as a stream: frames in order, each with its ground truth."""

    def next_frame(self) -> tuple[np.ndarray, FrameTruth]: ...


@dataclasses.dataclass(frozen=True)
class Scene:
    """One synthetic world."""

    name: str
    description: str
    classes: tuple[str, ...]  # index = YOLO class id
    severity: tuple[str, ...]  # the same classes, most severe first
    size: tuple[int, int]  # default (width, height)
    grey: bool  # frames are single-channel (HxW) rather than BGR (HxWx3)
    _still: Callable[[np.random.Generator, int, int], tuple[np.ndarray, FrameTruth]]
    _stream: Callable[[int, int, int, bool], SceneStream]

    def render_still(self, rng: np.random.Generator, width: int | None = None,
                     height: int | None = None) -> tuple[np.ndarray, FrameTruth]:
        """One independent frame (grey HxW or BGR HxWx3 ``uint8``) and its truth."""
        return self._still(rng, width or self.size[0], height or self.size[1])

    def stream(self, seed: int, width: int | None = None, height: int | None = None, *,
               edge_marks: bool = False) -> SceneStream:
        """The scene as a deterministic stream for ``seed``; ``edge_marks``: with defect-like marks that are not
        defects on the belt's edges (the conveyor only, :mod:`agent.capture.edge_marks`)."""
        return self._stream(seed, width or self.size[0], height or self.size[1], edge_marks)


def _conveyor_still(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, FrameTruth]:
    return render_still(rng, SceneSettings(width=width, height=height))


def _conveyor_stream(seed: int, width: int, height: int, edge_marks: bool) -> SceneStream:
    return ConveyorScene(seed=seed, settings=SceneSettings(width=width, height=height, edge_marks=edge_marks))


def _surface_still(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, FrameTruth]:
    return render_surface(rng, SurfaceSettings(width=width, height=height))


def _surface_stream(seed: int, width: int, height: int, edge_marks: bool) -> SceneStream:
    if edge_marks:
        raise SourceError("edge_marks is an option of the conveyor scene (the surface has no belt edges)")
    return SurfaceScene(seed=seed, settings=SurfaceSettings(width=width, height=height))


SCENES: dict[str, Scene] = {
    "conveyor": Scene("conveyor", "synthetic conveyor: colour parts on a belt", DEFECT_CLASSES,
                      ("missing", "hole", "scratch", "stain"), (640, 480), False, _conveyor_still, _conveyor_stream),
    "surface": Scene("surface", "synthetic grey surface: textured sheet, metal or fabric close-ups",
                     SURFACE_CLASSES, SURFACE_SEVERITY, (640, 640), True, _surface_still, _surface_stream),
}


def get_scene(name: str) -> Scene:
    """The scene called ``name``; SourceError naming the accepted scenes otherwise."""
    scene = SCENES.get(name)
    if scene is None:
        raise SourceError(f"unknown synthetic scene {name!r}; accepted: {', '.join(SCENES)}")
    return scene
