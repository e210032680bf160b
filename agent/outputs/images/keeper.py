"""The image keeper: which frames' JPEGs are kept for audits, written off the inference thread.

How it hooks in (neither call waits on the disk):

* :meth:`ImageKeeper.keep`, on the inference loop's publishing thread for every inspection, before its event
  is published: a frame whose verdict is kept (``images.verdicts``), or a pass drawn by the camera's pass
  sample (``pass_every_n`` / ``pass_per_minute``), is queued for the writer and its event gains ``image``
  (id and path). The frame's image is referenced, not copied (frames are immutable once taken); with
  ``reuse_snapshot`` the snapshot's JPEG, when one was rendered for the frame, is queued instead.
* :meth:`ImageKeeper.on_published` (a listener of the runtime's event fan-out): an escalated event that names
  an image (the VLM's answer, a revision 2) updates that image's verdict and event in the index.

**Queue full policy.** The writer thread (``images-writer``) takes at most ``images.queue_size`` frames
waiting. When that many wait, the new frame's image is not kept: it is counted
(``dropped{reason="queue_full"}``, a warning at most once a minute) and its event is published without
``image``, so an event never names an image that was never going to be written. Index updates wait in the same
queue (up to 1024 more); past that they are counted (``dropped{reason="update_queue_full"}``) and the index
keeps the first revision's event.

**Disk full.** A write the disk refuses (ENOSPC, EDQUOT, SQLite's "disk is full") or one that would leave less
than ``images.min_free_bytes`` free is not made: counted (``failed{reason="no_space"|"low_space"}``), reported
(:attr:`ImageStats.space_problem`: ``/healthz``, the STATUS= line, ``/metrics``, ``doctor``) and logged at most
once a minute; inspection and publishing go on. The next write that succeeds clears the report.

Eviction: by size before each write (:meth:`ImageStore.add`); by age once a minute (and at start), per camera.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import os
import pathlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping

import cv2
import numpy as np

from agent.config.images import ImagesConfig, Retention
from agent.config.loader import default_state_dir
from agent.config.models import AgentConfig
from agent.core.event import ImageRef, TagEvent
from agent.core.inspection import Inspection
from agent.core.ports import Published
from agent.errors import ConfigError
from agent.outputs.images.store import ImageRow, ImageStore, image_path

__all__ = ["ImageKeeper", "ImageStats", "images_dir", "images_stats", "open_keeper"]

log = logging.getLogger(__name__)

_UPDATES_MAX = 1024  # index updates that may wait besides the frames
_AGE_CHECK_S = 60.0
_WARN_EVERY_S = 60.0
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclasses.dataclass(frozen=True)
class ImageStats:
    """The keeper's counters (``/metrics``, ``/healthz``, the stats topic)."""

    images: dict[str, int]  # per camera: images on disk now
    bytes: dict[str, int]  # per camera: their bytes
    kept: dict[str, int]  # written since start, by verdict
    dropped: dict[str, int]  # not queued, by reason: queue_full, update_queue_full
    failed: dict[str, int]  # queued but not written, by reason: no_space, low_space, error
    evicted: dict[str, int]  # deleted since start, by reason: size, age
    queued: int  # frames waiting for the writer
    space_problem: str | None  # why the last write was not made for lack of space; None once one succeeds


@dataclasses.dataclass(frozen=True)
class _Write:
    event: TagEvent
    image: np.ndarray | None  # encoded by the writer; None when ``jpeg`` is given
    jpeg: bytes | None


@dataclasses.dataclass(frozen=True)
class _Update:
    event: TagEvent


_STOP = None


class ImageKeeper:
    """See the module doc. ``clock`` is the wall clock (Unix seconds) the age limit is measured with."""

    def __init__(self, config: ImagesConfig, store: ImageStore, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.store = store
        self._clock = clock
        self._monotonic = monotonic
        self._queue: queue.Queue[_Write | _Update | None] = queue.Queue(config.queue_size + _UPDATES_MAX)
        self._lock = threading.Lock()
        self._frames_queued = 0
        self._passes: collections.Counter[str] = collections.Counter()  # passes seen per camera (pass_every_n)
        self._last_pass: dict[str, float] = {}  # monotonic time of the last pass kept (pass_per_minute)
        self._kept: collections.Counter[str] = collections.Counter()
        self._dropped: collections.Counter[str] = collections.Counter()
        self._failed: collections.Counter[str] = collections.Counter()
        self._evicted: collections.Counter[str] = collections.Counter()
        self._space_problem: str | None = None
        self._warned: dict[str, float] = {}
        self._next_age_check = 0.0
        self._thread: threading.Thread | None = None
        self.on_change: Callable[[], None] | None = None  # called when the disk turns full or has room again

    # -- the publishing thread's side ------------------------------------------------------------------------

    def wants(self, inspection: Inspection) -> bool:
        """Whether this frame's image is to be kept (a pass drawn for the sample counts as drawn)."""
        camera, verdict = inspection.frame.camera_id, inspection.event.verdict
        rule = self.config.for_camera(camera)
        if not rule.enabled:
            return False
        if verdict in self.config.verdicts:
            return True
        return verdict == "pass" and self._draw_pass(camera, rule)

    def _draw_pass(self, camera: str, rule: Retention) -> bool:
        if rule.pass_every_n > 0:
            self._passes[camera] += 1
            return self._passes[camera] % rule.pass_every_n == 1 or rule.pass_every_n == 1
        if rule.pass_per_minute > 0:
            now = self._monotonic()
            last = self._last_pass.get(camera)
            if last is None or now - last >= 60.0 / rule.pass_per_minute:
                self._last_pass[camera] = now
                return True
        return False

    def keep(self, inspection: Inspection, jpeg: bytes | None = None) -> TagEvent:
        """Queue the frame's image (``jpeg`` when already encoded, else the frame) and return its event naming
        where it will be kept; the event unchanged when the queue is full. Call only when :meth:`wants`."""
        event = inspection.event
        ref = ImageRef(event.event_id, image_path(event.camera, event.event_id, event.captured_at))
        kept = dataclasses.replace(event, image=ref)
        with self._lock:
            if self._frames_queued >= self.config.queue_size:
                self._dropped["queue_full"] += 1
                self._warn("queue_full", "images: the writer is %d frame(s) behind (images.queue_size); frame %s "
                           "of camera %s published without its image (%d dropped so far)", self._frames_queued,
                           event.sequence, event.camera, self._dropped["queue_full"])
                return event
            self._frames_queued += 1
        self._queue.put_nowait(_Write(kept, None if jpeg is not None else inspection.frame.image, jpeg))
        return kept

    def on_published(self, published: Published) -> None:
        """An escalated event naming an image: its answer goes into the index."""
        if published.escalated and published.event.image is not None:
            try:
                self._queue.put_nowait(_Update(published.event))
            except queue.Full:
                with self._lock:
                    self._dropped["update_queue_full"] += 1

    # -- the writer thread ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="images-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (at most ``timeout`` s), then close the index."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("images: the writer did not finish within %.0f s; %d frame(s) not written", timeout,
                            self._frames_queued)
                return
        self.store.close()

    def _run(self) -> None:
        self.evict_by_age()
        while (job := self._queue.get()) is not _STOP:
            if isinstance(job, _Update):
                self._index(job.event)
                continue
            try:
                self.write(job)
            finally:
                with self._lock:
                    self._frames_queued -= 1
            if self._monotonic() >= self._next_age_check:
                self.evict_by_age()

    def write(self, job: _Write) -> bool:
        """Encode (unless given a JPEG) and store one image; False when it was not written (counted)."""
        event = job.event
        rule = self.config.for_camera(event.camera)
        jpeg = job.jpeg if job.jpeg is not None else self._encode(job.image, rule)
        if jpeg is None or event.image is None:
            self._failure("error", f"frame {event.sequence} of camera {event.camera} could not be encoded")
            return False
        free = self._free_bytes() if self.config.min_free_bytes > 0 else None  # 0: no floor, the OS says
        if free is not None and free - len(jpeg) < self.config.min_free_bytes:
            self._failure("low_space", f"{free} bytes free on the images' filesystem, under images.min_free_bytes="
                          f"{self.config.min_free_bytes}")
            return False
        row = ImageRow(event.event_id, event.camera, event.captured_at.timestamp(), event.verdict,
                       event.image.path, len(jpeg), event.revision, event.to_payload())
        try:
            evicted = self.store.add(row, jpeg, rule.max_bytes)
        except (OSError, sqlite3.Error) as exc:
            self._write_failed(exc, row.path)
            return False
        with self._lock:
            self._kept[event.verdict] += 1
            if evicted:
                self._evicted["size"] += evicted
            changed, self._space_problem = self._space_problem is not None, None
        if changed:
            log.warning("images: written again (room on the disk); %d image(s) not kept while it was full",
                        self._failed["no_space"] + self._failed["low_space"])
            self._changed()
        return True

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _free_bytes(self) -> int | None:
        try:
            return self.store.disk.free_bytes(self.store.root)
        except OSError:
            return None  # cannot tell: the write says

    @staticmethod
    def _encode(image: np.ndarray | None, rule: Retention) -> bytes | None:
        if image is None:
            return None
        width = rule.max_width
        if width is not None and image.shape[1] > width:
            scale = width / image.shape[1]
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, rule.quality])
        return buf.tobytes() if ok else None

    def _write_failed(self, exc: OSError | sqlite3.Error, path: str) -> None:
        full = (isinstance(exc, OSError) and exc.errno in _NO_SPACE) or (
            isinstance(exc, sqlite3.Error) and "full" in str(exc).lower())
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self._failure("no_space" if full else "error", f"writing {path}: {detail}")

    def _failure(self, reason: str, detail: str) -> None:
        with self._lock:
            self._failed[reason] += 1
            n = self._failed[reason]
            turned_full = reason in ("no_space", "low_space") and self._space_problem is None
            if reason in ("no_space", "low_space"):
                self._space_problem = detail
        self._warn(reason, "images: image not kept (%s): %s; inspection and publishing go on (%d so far)",
                   reason, detail, n)
        if turned_full:
            self._changed()

    def _warn(self, key: str, message: str, *args: object) -> None:
        now = self._monotonic()
        if now - self._warned.get(key, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self._warned[key] = now
            log.warning(message, *args)

    def _index(self, event: TagEvent) -> None:
        if event.image is None:
            return
        try:
            self.store.update(event.image.id, event.verdict, event.revision, event.to_payload())
        except sqlite3.Error as exc:
            self._failure("error", f"updating the index for event {event.event_id}: {exc}")

    def evict_by_age(self) -> int:
        """Delete every camera's images older than its ``max_days``; how many."""
        self._next_age_check = self._monotonic() + _AGE_CHECK_S
        now = self._clock()
        n = 0
        try:
            for camera in self.store.cameras():
                n += self.store.evict_older(now - self.config.for_camera(camera).max_days * 86400.0, camera)
        except sqlite3.Error as exc:
            self._failure("error", f"deleting old images: {exc}")
        if n:
            with self._lock:
                self._evicted["age"] += n
        return n

    # -- what ops reads -----------------------------------------------------------------------------------------

    def status_fields(self) -> dict[str, object]:
        """The retained device status's ``images`` entry (status.v1)."""
        st = self.stats()
        return {"images": {"disk_full": st.space_problem is not None, "problem": st.space_problem,
                           "stored": sum(st.images.values()), "bytes": sum(st.bytes.values())}}

    def stats(self) -> ImageStats:
        try:
            totals = self.store.totals()
        except sqlite3.Error:
            totals = {}
        with self._lock:
            return ImageStats({c: n for c, (n, _b) in totals.items()}, {c: b for c, (_n, b) in totals.items()},
                              dict(self._kept), dict(self._dropped), dict(self._failed), dict(self._evicted),
                              self._frames_queued, self._space_problem)


def images_stats(keeper: ImageKeeper | None) -> ImageStats | None:
    """The keeper's counters; None without one."""
    return keeper.stats() if keeper is not None else None


def images_dir(config: AgentConfig, env: Mapping[str, str] | None = None) -> pathlib.Path:
    """``images.dir``, by default ``images/`` in the agent's state directory."""
    return config.images.dir or default_state_dir(os.environ if env is None else env) / "images"


def open_keeper(config: AgentConfig, env: Mapping[str, str] | None = None) -> ImageKeeper | None:
    """The keeper for ``config`` with its folder opened (ImagesError when it cannot be; ConfigError for
    ``images.cameras`` naming no camera), not started; None when no camera keeps images."""
    images = config.images
    problems = images.unknown_cameras({c.id for c in config.cameras})
    if problems:
        raise ConfigError(problems)
    if not any(images.for_camera(c.id).enabled for c in config.cameras):
        return None
    keeper = ImageKeeper(images, ImageStore.open(images_dir(config, env)))
    log.info("audit images on", extra={"dir": str(keeper.store.root), "cameras": ",".join(
        c.id for c in config.cameras if images.for_camera(c.id).enabled)})
    return keeper
