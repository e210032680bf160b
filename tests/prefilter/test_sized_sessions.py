"""``model.input_size: auto`` keeps only the sessions some camera's frames run at (agent.prefilter.sized_sessions):
the model's own-size session is closed before the first fitted one opens, a camera whose frames change size
moves to the new size's session, and the old one is closed once the batches prepared at it have run, with
every frame's boxes the same as a model that never closed anything."""

from __future__ import annotations

import gc
import logging
import pathlib
import weakref
from typing import Any

import cv2
import numpy as np
import pytest

from agent.config.models import DEFAULT_PREFILTER, ModelConfig
from agent.prefilter.detector import YoloDetector
from agent.prefilter.factory import open_prefilter
from agent.prefilter.sized_sessions import SizedSessions
from agent.prefilter.yolo_decode import expected_anchor_count

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / "data" / "golden"


class _Session:
    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def get_outputs(self) -> list[Any]:
        return [type("Spec", (), {"shape": [1, 8, expected_anchor_count(self.size[1], self.size[0])]})()]


class _Opener:
    """Opens fake sessions, noting each one opened and which are still alive (held by someone)."""

    def __init__(self) -> None:
        self.opened: list[tuple[int, int]] = []
        self.alive: list[weakref.ref[_Session]] = []

    def __call__(self, size: tuple[int, int]) -> _Session:
        self.opened.append(size)
        session = _Session(size)
        self.alive.append(weakref.ref(session))
        return session

    def held(self) -> list[tuple[int, int]]:
        gc.collect()
        return [s.size for ref in self.alive if (s := ref()) is not None]


def test_the_own_size_session_is_closed_before_the_first_fitted_one_opens() -> None:
    opener = _Opener()
    native = opener((320, 320))
    sizes = SizedSessions(opener, 320, 320, "m.onnx", native=native)
    del native
    assert sizes.size_for(320, 320) == (320, 320)  # the warm-up's blank frame, no camera: its own size
    assert opener.held() == [(320, 320)]
    seen: list[list[tuple[int, int]]] = []
    real_open = sizes._opener

    def watching(size: tuple[int, int]) -> Any:
        seen.append(opener.held())  # what was still open when the fitted session was opened
        return real_open(size)

    sizes._opener = watching
    assert sizes.size_for(1280, 960, "cam1") == (256, 320)
    assert seen == [[]]  # the square session was gone before the fitted one was loaded: never both at once
    assert sizes.open_sizes == [(256, 320)] and opener.held() == [(256, 320)]
    assert sizes.size_for(1280, 960, "cam2") == (256, 320)  # a second camera of that size shares it
    assert opener.opened == [(320, 320), (256, 320)]


def test_a_camera_that_changes_size_moves_and_the_old_size_closes_when_its_batches_have_run(
        caplog: pytest.LogCaptureFixture) -> None:
    opener = _Opener()
    sizes = SizedSessions(opener, 320, 320, "m.onnx", native=opener((320, 320)))
    caplog.set_level(logging.INFO, logger="agent.prefilter.sized_sessions")
    assert sizes.size_for(1280, 960, "cam1") == (256, 320)
    assert sizes.size_for(1280, 960, "cam2") == (256, 320)
    sizes.prepared((256, 320))  # a batch of cam1's 1280x960 frames is on its way to the model
    assert sizes.size_for(1920, 1080, "cam1") == (192, 320)  # cam1 reconnected at 1920x1080
    assert sorted(sizes.open_sizes) == [(192, 320), (256, 320)]  # cam2 still runs at 256x320
    assert sizes.size_for(1920, 1080, "cam2") == (192, 320)  # so did cam2: nobody's frames run at 256x320 now
    assert sorted(opener.held()) == [(192, 320), (256, 320)]  # but a batch prepared at it has not run yet
    sizes.session((256, 320))  # the model thread gets its session
    sizes.ran((256, 320))
    assert opener.held() == [(192, 320)] and sizes.sizes == [(192, 320)]
    assert sum("input 320x256 (WxH) closed" in r.getMessage() for r in caplog.records) == 1
    assert sizes.size_for(1280, 960, "cam1") == (256, 320)  # and back: opened again
    assert opener.opened == [(320, 320), (256, 320), (192, 320), (256, 320)]
    assert sorted(sizes.open_sizes) == [(192, 320), (256, 320)]  # cam2 still at 192x320


def test_calls_without_a_camera_close_nothing() -> None:
    opener = _Opener()
    sizes = SizedSessions(opener, 320, 320, "m.onnx", native=opener((320, 320)))
    for frame in ((1280, 960), (1920, 1080), (320, 320)):
        sizes.size_for(*frame)
        sizes.ran(sizes.size_for(*frame))  # more runs than batches prepared (the runtime probe): harmless
    assert sorted(opener.held()) == [(192, 320), (256, 320), (320, 320)]
    assert sizes.size_for(1280, 960, "cam1") == (256, 320)  # the first camera: what no camera uses is closed
    assert opener.held() == [(256, 320)]
    assert sizes.native_session() is not None and sorted(opener.held()) == [(256, 320), (320, 320)]


def _golden(size: tuple[int, int]) -> list[np.ndarray]:
    return [cv2.resize(cv2.imread(str(GOLDEN / f"img{i:02d}.jpg")), size) for i in (6, 10)]  # 2 and 3 boxes


def test_the_detector_frees_the_square_session_and_follows_a_camera_that_changes_size() -> None:
    """The shipped detector in the agent's order (warm-up on a blank square frame, then a camera's batches
    through prepare/forward/finish on separate steps): the square ONNX Runtime session is released once the
    camera's first frame comes, and a switch from 1280x960 to 1920x1080 while a 1280x960 batch waits for the
    model loses nothing: every frame's boxes are those of a model that kept every session open."""
    config = ModelConfig(path=DEFAULT_PREFILTER, max_batch=2, min_score=0.25)
    model = open_prefilter(DEFAULT_PREFILTER, config)
    reference = open_prefilter(DEFAULT_PREFILTER, config)
    assert isinstance(model, YoloDetector) and isinstance(reference, YoloDetector) and model.sizes is not None
    model.infer(np.zeros((320, 320, 3), np.uint8))  # the warm-up
    square = weakref.ref(model.sizes.native_session())
    old, new = _golden((1280, 960)), _golden((1920, 1080))
    first = model.prepare(old, model.new_input(), sources=["cam1", "cam2"])
    gc.collect()
    assert square() is None and model.sizes.open_sizes == [(256, 320)]  # gone before the first fitted run
    fitted = weakref.ref(model.sizes.session((256, 320)))
    second = model.prepare(new, model.new_input(), sources=["cam1", "cam2"])  # both cameras reconnected
    assert sorted(model.sizes.open_sizes) == [(192, 320), (256, 320)]  # the first batch has not run yet
    results = model.finish(model.forward(first[0]), first[1], 0.0)
    gc.collect()
    assert fitted() is None and model.sizes.open_sizes == [(192, 320)]
    results += model.finish(model.forward(second[0]), second[1], 0.0)
    expected = reference.infer_batch(old + new)
    assert [r.detections for r in results] == [r.detections for r in expected]
    assert sum(len(r.detections) for r in results) > 0  # boxes were found: the comparison means something


def test_a_size_only_a_removed_camera_used_is_closed() -> None:
    opener = _Opener()
    sizes = SizedSessions(opener, 320, 320, "m.onnx", native=opener((320, 320)))
    sizes.size_for(1280, 960, "cam1")
    sizes.size_for(1920, 1080, "cam2")
    sizes.prepared((192, 320))  # cam2's last frames are still on their way to the model
    sizes.retain(["cam1", "cam3"])  # a reload removed cam2 (and added cam3, which has sent nothing yet)
    assert sorted(opener.held()) == [(192, 320), (256, 320)]
    sizes.ran((192, 320))
    assert opener.held() == [(256, 320)]
    sizes.retain(["cam1"])  # nothing removed: nothing closes
    assert sizes.open_sizes == [(256, 320)]
