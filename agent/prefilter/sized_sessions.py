"""``model.input_size: auto``: the detector's sessions by input size, each opened when a frame needs it and closed
when no camera's frames run at it any more.

A 320x320 detector runs a 1280x960 frame at 256x320 and a 1920x1080 one at 192x320
(:func:`agent.prefilter.input_size.fitted_size`): the same letterbox scale, less padding, less work.
Each size needs its own session (the graph rewritten for it, agent.prefilter.input_size), so at most
:data:`MAX_SIZES` besides the model's own are open at once; a frame size beyond them, or one whose session
cannot be opened, runs at the model's own size, with one log line per frame size.

A session is memory (the shipped FP32 detector's: about 35 MB of weights and buffers once loaded, twice that
while it loads), so only the sizes in use are kept:

- each camera (the ``source`` the inference loop passes) counts as a user of the size its frames run at; when its
  frames change size (a reconnect at another resolution) it moves to the new size; a camera a reload removes
  (:meth:`retain`) no longer counts;
- before a session is opened for a camera, and whenever a camera moves, every size no camera uses is closed: the
  model's own-size session, which the factory opened to read the model's layout and the warm-up ran, is closed
  before the first fitted one is opened, so the two are never held at once;
- a size that loses its last camera while batches prepared at it have not run yet (:meth:`prepared`,
  :meth:`ran`) is closed when the last of them has run, so no frame already taken is lost.

Calls without a source (one ``infer``, calibration, the runtime probe, benchmarks) open what they need and close
nothing; what they opened is closed at the next camera's move.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Hashable
from typing import Any

from agent.core.heap import release_free_memory
from agent.errors import ModelError
from agent.prefilter.input_size import fitted_size
from agent.prefilter.yolo_decode import expected_anchor_count

__all__ = ["MAX_SIZES", "SizedSessions"]

log = logging.getLogger(__name__)

MAX_SIZES = 4  # sessions besides the model's own size: cameras of more shapes than that on one box are rare

Size = tuple[int, int]  # (height, width)


class SizedSessions:
    """Sessions of one detector by input size (height, width), opened by ``opener`` on first use; ``native`` is
    the session at the model's own size when one is already open. All methods may be called from several
    threads."""

    def __init__(self, opener: Callable[[Size], Any], model_h: int, model_w: int, label: str,
                 limit: int = MAX_SIZES, native: Any = None) -> None:
        self._opener = opener
        self.native = (model_h, model_w)
        self._label = label
        self._limit = limit
        self._sessions: dict[Size, Any] = {} if native is None else {self.native: native}
        self._chosen: dict[Size, Size] = {}  # frame (w, h) -> input (h, w); every value's session is open
        self._broken: set[Size] = set()  # fitted sizes whose session could not be opened: not tried again
        self._said: set[Size] = set()  # frame sizes whose fall-back to the model's own size was logged
        self._users: dict[Size, set[Hashable]] = {}
        self._where: dict[Hashable, Size] = {}  # source -> the input size its frames run at
        self._pending: dict[Size, int] = {}  # batches prepared at a size that have not run yet
        self._retiring: set[Size] = set()  # no camera uses it; closed when its pending batches have run
        self._lock = threading.RLock()

    @property
    def sizes(self) -> list[Size]:
        """The input sizes (height, width) with an open session, besides the model's own."""
        return [s for s in self._sessions if s != self.native]

    @property
    def open_sizes(self) -> list[Size]:
        """Every input size with an open session, the model's own included."""
        return list(self._sessions)

    def size_for(self, src_w: int, src_h: int, source: Hashable | None = None) -> Size:
        """The input size (height, width) a ``src_w`` x ``src_h`` frame runs at, its session open; ``source`` (a
        camera) is then counted as a user of that size, and no longer of the one it used before."""
        chosen = self._chosen.get((src_w, src_h))
        if chosen is not None and (source is None or self._where.get(source) == chosen):
            return chosen
        with self._lock:
            if source is not None:
                self._leave(source)
                self._close_unused()
            chosen = self._chosen.get((src_w, src_h))
            if chosen is None:
                chosen = self._chosen[(src_w, src_h)] = self._choose(src_w, src_h)
            if source is not None:
                self._where[source] = chosen
                self._users.setdefault(chosen, set()).add(source)
                self._retiring.discard(chosen)
            return chosen

    def session(self, size: Size) -> Any:
        """The session for ``size`` (one ``size_for`` returned), opened again should it have been closed."""
        found = self._sessions.get(size)
        if found is not None:
            return found
        with self._lock:
            if size not in self._sessions:
                log.info("model %s: input %dx%d (WxH) opened again", self._label, size[1], size[0])
                self._sessions[size] = self._opener(size)
                release_free_memory()  # what loading it went through
            return self._sessions[size]

    def native_session(self) -> Any:
        """The session at the model's own size (opened if it is not open)."""
        return self.session(self.native)

    def retain(self, sources: Collection[Hashable]) -> None:
        """Only ``sources`` are cameras now: the others no longer count as users, and the sizes no camera uses are
        closed (when their prepared batches have run)."""
        with self._lock:
            gone = set(self._where) - set(sources)
            for source in gone:
                self._leave(source)
            if gone:
                self._close_unused()

    def prepared(self, size: Size) -> None:
        """A batch was prepared at ``size``: its session stays open until :meth:`ran` says the batch ran."""
        with self._lock:
            self._pending[size] = self._pending.get(size, 0) + 1

    def ran(self, size: Size) -> None:
        """A batch at ``size`` ran (or failed): the size is closed when no camera uses it and nothing waits."""
        with self._lock:
            left = self._pending[size] = max(0, self._pending.get(size, 0) - 1)
            if not left and size in self._retiring:
                self._close(size)

    def _leave(self, source: Hashable) -> None:
        old = self._where.pop(source, None)
        if old is not None:
            self._users.get(old, set()).discard(source)

    def _close_unused(self) -> None:
        """Close every size no camera uses (those with batches still to run when these have run)."""
        for size in [s for s in self._sessions if not self._users.get(s)]:
            if self._pending.get(size, 0):
                self._retiring.add(size)
            else:
                self._close(size)

    def _close(self, size: Size) -> None:
        self._retiring.discard(size)
        if self._sessions.pop(size, None) is None:
            return
        for frame in [f for f, s in self._chosen.items() if s == size]:
            del self._chosen[frame]
        release_free_memory()
        log.info("model %s: input %dx%d (WxH) closed: no camera's frames run at it", self._label, size[1], size[0])

    def _choose(self, src_w: int, src_h: int) -> Size:
        fitted = fitted_size(src_w, src_h, self.native[1], self.native[0])
        if fitted == self.native or fitted in self._sessions:
            return self._open(fitted)
        if fitted in self._broken:
            return self._open(self.native)
        if len(self.sizes) >= self._limit:
            if (src_w, src_h) not in self._said:
                self._said.add((src_w, src_h))
                log.info("model %s: frames of %dx%d run at the model's own size %dx%d: already %d other input sizes "
                         "(%s) are open (model.input_size auto opens at most %d)", self._label, src_w, src_h,
                         self.native[1], self.native[0], len(self.sizes),
                         ", ".join(f"{h}x{w}" for h, w in self.sizes), self._limit)
            return self._open(self.native)
        problem = self._try_open(fitted)
        if problem is not None:
            self._broken.add(fitted)
            log.warning("model %s: frames of %dx%d run at the model's own size %dx%d: %s", self._label, src_w, src_h,
                        self.native[1], self.native[0], problem)
            return self._open(self.native)
        log.info("model %s: frames of %dx%d run at input %dx%d (WxH) instead of %dx%d (model.input_size auto)",
                 self._label, src_w, src_h, fitted[1], fitted[0], self.native[1], self.native[0])
        return fitted

    def _open(self, size: Size) -> Size:
        if size not in self._sessions:
            self._sessions[size] = self._opener(size)
            release_free_memory()  # what loading it went through
        return size

    def _try_open(self, fitted: Size) -> str | None:
        """Open the session for ``fitted``; what is wrong with it, or None."""
        try:
            session = self._opener(fitted)
        except ModelError as exc:
            return str(exc)
        finally:
            release_free_memory()  # what loading it went through
        shape = list(session.get_outputs()[0].shape)
        anchors = expected_anchor_count(fitted[1], fitted[0])
        if shape[-1] != anchors:
            return f"the session for input {fitted[1]}x{fitted[0]} gives output {shape}, not {anchors} anchors"
        self._sessions[fitted] = session
        return None
