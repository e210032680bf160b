"""``model.input_size: auto``: one detector session per input size its cameras' frames fit, opened on first use.

A 320x320 detector runs a 1280x960 frame at 256x320 and a 1920x1080 one at 192x320
(:func:`agent.prefilter.input_size.fitted_size`): the same letterbox scale, less padding, less work.
Each size needs its own session (the graph rewritten for it, agent.prefilter.input_size), so at most
:data:`MAX_SIZES` are opened; a frame size beyond them, or one whose session cannot be opened, runs at the
model's own size, with one log line per frame size. The decision is made once per frame size.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.errors import ModelError
from agent.prefilter.input_size import fitted_size
from agent.prefilter.yolo_decode import expected_anchor_count

__all__ = ["MAX_SIZES", "SizedSessions"]

log = logging.getLogger(__name__)

MAX_SIZES = 4  # sessions besides the model's own size: cameras of more shapes than that on one box are rare


class SizedSessions:
    """Sessions of one detector at sizes other than its own (height, width), opened by ``opener`` on first use.
    ``size_for`` and ``session`` may be called from several threads."""

    def __init__(self, opener: Callable[[tuple[int, int]], Any], model_h: int, model_w: int, label: str,
                 limit: int = MAX_SIZES) -> None:
        self._opener = opener
        self.native = (model_h, model_w)
        self._label = label
        self._limit = limit
        self._sessions: dict[tuple[int, int], Any] = {}
        self._chosen: dict[tuple[int, int], tuple[int, int]] = {}  # frame (w, h) -> input (h, w)
        self._lock = threading.Lock()

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """The input sizes (height, width) with an open session, besides the model's own."""
        return list(self._sessions)

    def size_for(self, src_w: int, src_h: int) -> tuple[int, int]:
        """The input size (height, width) a ``src_w`` x ``src_h`` frame runs at (its session opened if needed)."""
        chosen = self._chosen.get((src_w, src_h))
        if chosen is None:
            with self._lock:
                chosen = self._chosen.get((src_w, src_h)) or self._choose(src_w, src_h)
                self._chosen[(src_w, src_h)] = chosen
        return chosen

    def session(self, size: tuple[int, int]) -> Any:
        """The session for ``size`` (one ``size_for`` returned)."""
        return self._sessions[size]

    def _choose(self, src_w: int, src_h: int) -> tuple[int, int]:
        fitted = fitted_size(src_w, src_h, self.native[1], self.native[0])
        if fitted == self.native or fitted in self._sessions:
            return fitted
        if len(self._sessions) >= self._limit:
            log.info("model %s: frames of %dx%d run at the model's own size %dx%d: already %d other input sizes "
                     "(%s) are open (model.input_size auto opens at most %d)", self._label, src_w, src_h,
                     self.native[1], self.native[0], len(self._sessions),
                     ", ".join(f"{h}x{w}" for h, w in self._sessions), self._limit)
            return self.native
        try:
            session = self._opener(fitted)
        except ModelError as exc:
            log.warning("model %s: frames of %dx%d run at the model's own size %dx%d: %s", self._label, src_w, src_h,
                        self.native[1], self.native[0], exc)
            return self.native
        shape = list(session.get_outputs()[0].shape)
        if shape[-1] != expected_anchor_count(fitted[1], fitted[0]):
            log.warning("model %s: the session for input %dx%d gives output %s, not %d anchors; frames of %dx%d run "
                        "at the model's own size", self._label, fitted[1], fitted[0], shape,
                        expected_anchor_count(fitted[1], fitted[0]), src_w, src_h)
            return self.native
        self._sessions[fitted] = session
        log.info("model %s: frames of %dx%d run at input %dx%d (WxH) instead of %dx%d (model.input_size auto)",
                 self._label, src_w, src_h, fitted[1], fitted[0], self.native[1], self.native[0])
        return fitted
