"""The seams between the stages and the runtime, as Protocols: what the runtime needs of a prefilter, a frame
queue, an escalation, an event sink and the publisher. A capability only some implementations have is a small
port of its own (:class:`DescribedPrefilter`, :class:`BatchPrefilter`, :class:`StagedPrefilter`,
:class:`ConcurrentRuns`, :class:`PicturePrefilter`), checked with ``isinstance``, never probed by attribute name.

Implementations: the prefilters in :mod:`agent.prefilter`, the grabber in :mod:`agent.capture.grabber`, the
escalator in :mod:`agent.escalation.escalator`, the publisher in :mod:`agent.publish.reliable`. What a tag event
needs of a taxonomy is :class:`agent.core.event.LabelMap`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from agent.core.decision import TriageDecision
from agent.core.detections import PrefilterResult
from agent.core.event import TagEvent
from agent.core.frame import Frame
from agent.core.picture import Picture


@runtime_checkable
class Prefilter(Protocol):
    """A prefilter model (``YoloDetector``, ``ImageClassifier``: see ``agent.prefilter.factory``)."""

    def infer(self, image: np.ndarray) -> PrefilterResult: ...


class ModelDescription(Protocol):
    """What a prefilter says about its model (``agent.prefilter.model_info.ModelInfo``)."""

    @property
    def model_id(self) -> str: ...

    @property
    def task(self) -> str: ...

    @property
    def names(self) -> tuple[str, ...]: ...

    @property
    def input_w(self) -> int: ...

    @property
    def input_h(self) -> int: ...


@runtime_checkable
class DescribedPrefilter(Prefilter, Protocol):
    """A prefilter that says which model it runs (the shipped ones do; one handed in by a test may not)."""

    @property
    def info(self) -> ModelDescription: ...


@runtime_checkable
class BatchPrefilter(Prefilter, Protocol):
    """A prefilter that takes the frames of several cameras in one call (when ``max_batch`` > 1)."""

    max_batch: int

    def infer_batch(self, images: Sequence[np.ndarray]) -> list[PrefilterResult]: ...


@runtime_checkable
class StagedPrefilter(Protocol):
    """A prefilter whose call splits into stages, each of which may run on its own thread
    (``YoloDetector``): ``prepare`` frames into an input buffer from ``new_input``, ``forward`` the
    model, ``finish`` decoding (adding its own time to ``spent_ms`` in each result's latency). One
    ``forward`` at a time, unless it is also a :class:`ConcurrentRuns`. The tensor is whatever ``prepare``
    returns (one array, or a tuple of them for frames at several input sizes), the output whatever
    ``forward`` returns for it. ``sources`` names each image's camera (the detector keeps a session open per
    input size while a camera's frames run at it); every prepared tensor goes through ``forward`` once."""

    max_batch: int

    def new_input(self) -> Any: ...

    def prepare(self, images: Sequence[np.ndarray | Picture], buffer: Any,
                sources: Sequence[Hashable] | None = None) -> tuple[Any, list[Any]]: ...

    def forward(self, tensor: Any) -> Any: ...

    def finish(self, output: Any, plans: Sequence[Any], spent_ms: float) -> list[PrefilterResult]: ...


@runtime_checkable
class PicturePrefilter(Protocol):
    """A prefilter that takes a frame's :class:`~agent.core.picture.Picture` where it takes an image
    (``YoloDetector``: it letterboxes the whole frame, asking the picture for the letterbox's window straight
    from the decoder, so that a lazy picture is not converted at full size for the model). ``takes_pictures``
    is True."""

    takes_pictures: bool
    max_batch: int

    def infer(self, image: np.ndarray | Picture) -> PrefilterResult: ...

    def infer_batch(self, images: Sequence[np.ndarray | Picture]) -> list[PrefilterResult]: ...


@runtime_checkable
class ConcurrentRuns(Protocol):
    """A staged prefilter that may have up to ``concurrent_runs`` ``forward`` calls running at once (each on its
    own input buffer; ``model.concurrent_runs``)."""

    concurrent_runs: int


@runtime_checkable
class PerCameraState(Protocol):
    """A staged prefilter that keeps something per camera (``prepare``'s ``sources``: the detector keeps a session
    open per input size while a camera's frames run at it): told which cameras are left after a reload, so what
    only a removed camera used is let go."""

    def retain_sources(self, sources: Collection[Hashable]) -> None: ...


class FrameQueue(Protocol):
    """What the inference thread needs of a grabber."""

    def take(self, timeout: float) -> Frame | None: ...

    @property
    def ended(self) -> bool: ...


class EventSink(Protocol):
    """Where a finished tag event goes (the publisher, or the runtime's fan-out to its listeners)."""

    def publish_event(self, event: TagEvent) -> int: ...


@runtime_checkable
class BatchEventSink(EventSink, Protocol):
    """A sink that takes several events at once (``ReliablePublisher``: one outbox transaction for them all),
    in order, all or none."""

    def publish_events(self, events: Sequence[TagEvent]) -> list[int]: ...


@dataclasses.dataclass(frozen=True)
class Published:
    """One event the publisher took, as the runtime's event fan-out tells its listeners."""

    event: TagEvent
    seconds: float  # how long the publisher took (the ``publish`` stage: the outbox commit)
    escalated: bool  # published by the escalation thread (an uncertain frame, answered or not)


class EventListener(Protocol):
    """An observer of the published events (metrics, dataset recorder, learn tally): it listens, it does not
    wrap the publisher."""

    def on_published(self, published: Published) -> None: ...


class Escalation(Protocol):
    """Where uncertain frames go when a gateway is configured (``agent.escalation.escalator.Escalator``):
    ``submit`` returns at once; the frame's event is published from the escalation thread."""

    def submit(self, frame: Frame, decision: TriageDecision, event: TagEvent) -> None: ...


@dataclasses.dataclass(frozen=True)
class ReliableStats:
    """The publisher's counters (:meth:`Publisher.stats`), for the stats topic, health and ``/metrics``."""

    committed: int  # events committed to the outbox by this process
    acked: int  # rows acknowledged by the broker and deleted
    evicted: int  # rows evicted unsent because the outbox was full (this process)
    evicted_total: int  # over the outbox file's life
    redelivered: int  # rows sent again after a restart (may be duplicates downstream)
    resent: int  # in flight at a disconnect, sent again by paho after the reconnect (may be duplicates)
    refused: int  # PUBACKs with a failure code (rows retried, then dead-lettered)
    pending: int  # rows in the outbox now (unsent or unacknowledged)
    pending_bytes: int
    inflight: int
    connected: bool
    last_error: str | None
    dead_letters: int = 0  # rows in the outbox's dead-letter table now
    dead_lettered: int = 0  # moved there by this process
    dead_by_cause: tuple[tuple[str, int], ...] = ()  # (cause, rows now)
    snapshots_shrunk: int = 0  # re-encoded smaller to fit the broker's packet limit
    snapshots_dropped: int = 0  # too large for the broker even shrunk: not sent, counted

    # the names the demo's summary shares with MqttPublisher's stats
    @property
    def published(self) -> int:
        return self.committed

    @property
    def dropped(self) -> int:
        return self.evicted


StatusProvider = Callable[[], dict[str, Any]]
"""Adds fields to the retained device status (called at every status publication)."""


class Publisher(EventSink, Protocol):
    """The device's store-and-forward publisher (``agent.publish.reliable.ReliablePublisher``)."""

    def start(self) -> None: ...

    def wait_connected(self, timeout: float) -> bool: ...

    def publish_snapshot(self, camera: str, event_id: str, jpeg: bytes, durable: bool) -> bool: ...

    def publish_stats(self, doc: dict[str, Any]) -> None: ...

    def add_status_extra(self, provider: StatusProvider) -> None: ...

    def republish_status(self) -> None: ...

    def flush(self, timeout: float) -> bool: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    @property
    def forwarder_alive(self) -> bool: ...

    @property
    def last_progress(self) -> float:
        """time.monotonic() at the start of the forwarder's current pass (the watchdog's ``outbox forwarder``)."""
        ...

    @property
    def connects(self) -> int:
        """Successful connections to the broker so far (more than 1: it reconnected)."""
        ...

    def stats(self) -> ReliableStats: ...

