"""The agent side of escalation: uncertain frames in, their tag events out, never blocking inference.

Threads. The inference thread calls :meth:`Escalator.submit` for every uncertain
frame; it returns within a couple of milliseconds (a perceptual hash and a few
checks under a lock) and never waits for the gateway. The ``escalation`` thread
runs one asyncio loop with the gRPC channel (:mod:`agent.escalation.client`):
it starts calls, keeps the publish deadlines and publishes the events. JPEG
encoding runs on one ``escalation-encode`` worker thread.

One uncertain frame, in order (the first rule that applies decides):

1. **Near-duplicate** (:mod:`agent.escalation.dedupe`) of an earlier frame of the
   camera whose answer is known: published at once, status ``cached``, the
   earlier answer merged in. Of a frame whose call is still pending: the frame
   waits for that same answer (no call of its own; at most
   :data:`MAX_FOLLOWERS` frames per call, further ones are published at once as
   ``rate_limited``).
2. **Circuit breaker open** (:mod:`agent.escalation.breaker`): published at
   once, ``unavailable``, with the last failure as the reason.
3. **Camera's budget spent** (:mod:`agent.escalation.ratelimit`): at once,
   ``rate_limited``.
4. **Queue full** (``escalation.queue_size`` frames already waiting for one of
   ``max_in_flight`` call slots): at once, ``rate_limited``. This is the bounded
   queue between the inference thread and the escalation thread: a full queue
   refuses, it never blocks or grows.
5. Otherwise the frame is queued for a call, with a deadline of
   ``escalation.call_deadline_s`` from now, queueing included.

A queued or running frame's event is published (revision 1) as soon as its
outcome is final (the answer, or the call's failure: ``rejected``,
``unavailable``, ``invalid_answer``, ``rate_limited`` when the gateway is busy,
``timeout``), or when ``escalation.publish_deadline_s`` passes, whichever comes
first; on the deadline it is published with status ``timeout`` and the
prefilter's verdict. If the answer then arrives within the call deadline, the
event is published again with the same ``event_id`` and ``revision: 2``, the
VLM's verdict merged in (:mod:`agent.escalation.merge`). A call that fails after
its frame was published changes nothing (counted as ``late_failures``).

Bounds. Frames held: ``queue_size + max_in_flight`` (each call keeps its frame
until its request is encoded); events waiting: those plus at most
:data:`MAX_FOLLOWERS` followers per call; the dedupe cache:
``dedupe.max_entries``. Every refusal is counted (``refused`` in
:class:`EscalationStats`) and logged at debug level (breaker transitions,
queue-full and rejected requests at warning, at most once a minute each).

Shutdown (:meth:`Escalator.stop`): new frames are published at once as
``unavailable``; queued frames too; running calls get until their frames'
publish deadline (so those are published as usual, answered or ``timeout``),
then are cancelled (their late updates are lost, counted as ``abandoned``).
Every frame handed to :meth:`submit` is published exactly once as revision 1.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping

import cv2
import grpc

from agent.config.escalation import EscalationConfig, RateLimitConfig
from agent.core.decision import TriageDecision
from agent.core.event import EscalationOutcome, EscalationStatus, TagEvent
from agent.core.frame import Frame
from agent.core.ports import EventSink
from agent.escalation.breaker import BreakerState, CircuitBreaker, Permit
from agent.escalation.client import EscalationClient, channel_credentials, read_token
from agent.escalation.dedupe import NearDuplicateCache, Signature
from agent.escalation.merge import VlmAnswer, merge
from agent.escalation.ratelimit import CameraRateLimiter
from agent.escalation.records import Answered, Call, EscalationStats, Ticket
from agent.escalation.request import build_request

__all__ = ["ESCALATED_STATUSES", "MAX_FOLLOWERS", "EscalationStats", "Escalator"]

log = logging.getLogger(__name__)

MAX_FOLLOWERS = 32
"""Most near-duplicate frames that wait for one pending call's answer."""

ESCALATED_STATUSES: tuple[EscalationStatus, ...] = (
    "answered", "cached", "timeout", "unavailable", "rejected", "rate_limited", "invalid_answer")
"""The statuses an uncertain frame can be published with when a gateway is configured."""

REFUSALS = ("breaker_open", "rate_limit", "queue_full", "followers_full", "stopping")
_MIN_CALL_S = 0.05  # a call with less time left than this is not started
_WARN_EVERY_S = 60.0


class Escalator:
    """Escalates uncertain frames to the gateway and publishes their events to ``sink``.

    ``rates`` maps camera ids to their ``escalation_rate`` overrides; ``credentials`` are the channel's
    TLS credentials (default: read from ``config.tls``, ConfigError when a file is bad); ``client_factory``
    (called on the escalation loop) replaces the gRPC client built from ``config``.
    """

    def __init__(
        self,
        config: EscalationConfig,
        sink: EventSink,
        *,
        rates: Mapping[str, RateLimitConfig] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        client_factory: Callable[[], EscalationClient] | None = None,
    ) -> None:
        if config.gateway is None and client_factory is None:
            raise ValueError("escalation.gateway is not set; build no Escalator when escalation is off")
        self.config = config
        self._sink = sink
        if credentials is None and config.tls is not None:
            credentials = channel_credentials(config.tls)  # fails here, before start
        token = read_token(config) if client_factory is None else None  # likewise
        self._client_factory = client_factory or (lambda: EscalationClient.connect(config, credentials, token))
        self._client: EscalationClient | None = None
        self._lock = threading.Lock()
        self._breaker = CircuitBreaker(config.breaker.failure_threshold, config.breaker.open_s,
                                       on_change=self._breaker_changed)
        self._limiter = CameraRateLimiter(
            {cam: (r.per_minute, r.burst) for cam, r in (rates or {}).items()},
            (config.rate_per_camera.per_minute, config.rate_per_camera.burst))
        d = config.dedupe
        self._cache: NearDuplicateCache[Call | Answered] | None = (
            NearDuplicateCache(max_distance=d.max_distance, min_iou=d.min_iou, ttl_s=d.ttl_s,
                               max_entries=d.max_entries) if d.enabled else None)
        self._queue: collections.deque[Call] = collections.deque()
        self._waiting: set[Ticket] = set()
        self._new: list[Ticket] = []  # tickets whose deadline the loop has not armed yet
        self._wake_pending = False
        self._closed = False  # no new calls: stop() began
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._statuses: collections.Counter[str] = collections.Counter({s: 0 for s in ESCALATED_STATUSES})
        self._verdicts: collections.Counter[str] = collections.Counter()
        self._codes: collections.Counter[str] = collections.Counter()
        self._refused: collections.Counter[str] = collections.Counter({r: 0 for r in REFUSALS})
        self._updates = self._late_failures = self._abandoned = self._calls = 0
        self._cache_hits = self._cache_joins = self._publish_failed = 0
        self._warned: dict[str, tuple[float, int]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._encoder = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="escalation-encode")

    # -- lifecycle (service thread) ----------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run_loop, name="escalation", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout)
        log.info("escalation on", extra={"gateway": self.config.gateway, "tls": self.config.tls is not None,
                                         "publish_deadline_s": self.config.publish_deadline_s,
                                         "call_deadline_s": self.config.call_deadline_s})

    def stop(self, timeout: float = 10.0) -> None:
        """Publish every frame still waiting (see the module doc) and close the channel."""
        if self._thread is None:
            return
        with self._lock:
            self._closed = True
        drain = min(max(0.0, timeout - 1.0), self.config.publish_deadline_s + 0.2)
        future = asyncio.run_coroutine_threadsafe(self._shutdown(drain), self._loop)
        try:
            future.result(max(1.0, timeout))
        except concurrent.futures.TimeoutError:
            log.warning("escalation shutdown did not finish in %.1f s", timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(max(1.0, timeout))
        self._encoder.shutdown(wait=False, cancel_futures=True)
        self._thread = None

    def set_rates(self, rates: Mapping[str, RateLimitConfig], default: RateLimitConfig) -> None:
        """New per-camera escalation budgets (a config reload): ``rates`` as in the constructor, ``default``
        for the cameras not in it (``escalation.rate_per_camera``)."""
        with self._lock:
            self._limiter.set_limits({cam: (r.per_minute, r.burst) for cam, r in rates.items()},
                                     (default.per_minute, default.burst))

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _open(self) -> None:
        self._client = self._client_factory()

    async def _shutdown(self, drain_s: float) -> None:
        with self._lock:
            queued, self._queue = list(self._queue), collections.deque()
        for call in queued:
            self._finish(call, "unavailable", "the agent stopped before this frame was sent to the gateway")
        end = time.monotonic() + drain_s
        while time.monotonic() < end:
            with self._lock:
                if not self._waiting:
                    break
            await asyncio.sleep(0.02)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with self._lock:
            left = list(self._waiting)
        for ticket in left:  # cannot happen unless drain_s was cut short; never lose a frame
            self._publish_first(ticket, EscalationOutcome(
                "unavailable", reason="the agent stopped before the gateway answered"), None)
        if self._client is not None:
            await self._client.close(0)

    # -- intake (inference thread) -------------------------------------------------------------------

    def submit(self, frame: Frame, decision: TriageDecision, event: TagEvent) -> None:
        """Take one uncertain frame; its event is published later, or at once when it is refused or cached."""
        now = time.monotonic()
        signature = None
        if self._cache is not None:
            signature = Signature.of(frame.image, [(t.detection.label, t.detection.box) for t in decision.tags
                                                   if t.state == "uncertain"])
        with self._lock:
            immediate = self._admit(frame, decision, event, signature, now)
        if immediate is not None:
            self._emit(immediate, first=True)

    def _admit(self, frame: Frame, decision: TriageDecision, event: TagEvent, signature: Signature | None,
               now: float) -> TagEvent | None:
        """Under the lock: the event to publish at once, or None when the frame now waits for a call."""
        camera = event.camera
        if self._closed:
            return self._refuse(event, "stopping", "unavailable", "the agent is stopping")
        if self._cache is not None and signature is not None:
            hit = self._cache.find(camera, signature, now)
            if hit is not None and isinstance(hit.value, Answered):
                known = hit.value
                self._cache_hits += 1
                outcome = EscalationOutcome(
                    "cached", reason=f"near-duplicate of frame {known.sequence} (event {known.event_id}; "
                    f"{hit.distance} of 63 hash bits differ), answered {now - known.at:.1f} s ago",
                    model=known.answer.model, description=known.answer.description)
                return self._count_first(merge(event, outcome, known.answer))
            if hit is not None and isinstance(hit.value, Call):
                pending = hit.value
                if len(pending.followers) >= MAX_FOLLOWERS:
                    return self._refuse(event, "followers_full", "rate_limited",
                                        f"near-duplicate of frame {pending.leader.event.sequence}, whose escalation "
                                        f"is pending with {MAX_FOLLOWERS} frames already waiting for its answer")
                ticket = self._ticket(event, now)
                ticket.near = (pending.leader.event.sequence, pending.leader.event.event_id, hit.distance)
                pending.followers.append(ticket)
                self._cache_joins += 1
                return None
        if not self._breaker.would_allow(now):
            return self._refuse(event, "breaker_open", "unavailable", self._breaker_reason(now))
        if not self._limiter.allow(camera, now):
            return self._refuse(event, "rate_limit", "rate_limited", self._limiter.refusal(camera, now))
        if len(self._queue) >= self.config.queue_size:
            self._warn("queue_full", "escalation queue full: uncertain frames are published as rate_limited "
                       "(the gateway is slower than the frames that need it)")
            return self._refuse(event, "queue_full", "rate_limited",
                                f"escalation queue full ({len(self._queue)} frames waiting for one of "
                                f"{self.config.max_in_flight} call slots; escalation.queue_size)")
        call = Call(frame.image, decision, self._ticket(event, now))
        if self._cache is not None and signature is not None:
            call.cache_key = self._cache.put(camera, signature, call, now, ttl_s=self.config.call_deadline_s + 1.0)
        self._queue.append(call)
        return None

    def _ticket(self, event: TagEvent, now: float) -> Ticket:
        """Under the lock: a waiting frame whose deadline the loop arms."""
        ticket = Ticket(event, now, now + self.config.publish_deadline_s)
        self._waiting.add(ticket)
        self._new.append(ticket)
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._on_wake)
        return ticket

    def _refuse(self, event: TagEvent, why: str, status: EscalationStatus, reason: str) -> TagEvent:
        """Under the lock: count and log a refusal; the event to publish at once."""
        self._refused[why] += 1
        log.debug("escalation refused", extra={"camera": event.camera, "frame": event.sequence,
                                               "event_id": event.event_id, "status": status, "reason": reason})
        return self._count_first(merge(event, EscalationOutcome(status, reason=reason), None))

    def _count_first(self, event: TagEvent) -> TagEvent:
        """Under the lock: count a first publication."""
        self._statuses[event.escalation.status] += 1
        self._verdicts[event.verdict] += 1
        return event

    # -- the escalation loop ----------------------------------------------------------------------

    def _on_wake(self) -> None:
        with self._lock:
            new, self._new = self._new, []
            self._wake_pending = False
        now = time.monotonic()
        for ticket in new:
            if ticket.published is None:
                ticket.timer = self._loop.call_later(max(0.0, ticket.publish_at - now), self._on_deadline, ticket)
        self._dispatch()

    def _dispatch(self) -> None:
        """Start queued calls while there are free slots."""
        while True:
            with self._lock:
                if self._in_flight >= self.config.max_in_flight or not self._queue:
                    return
                call = self._queue.popleft()
                now = time.monotonic()
                budget = call.leader.submitted + self.config.call_deadline_s - now
                refusal: tuple[EscalationStatus, str] | None = None
                if self._closed:
                    refusal = ("unavailable", "the agent stopped before this frame was sent to the gateway")
                elif budget < _MIN_CALL_S:
                    refusal = ("timeout", f"waited {now - call.leader.submitted:.1f} s for a call slot; nothing "
                               f"left of escalation.call_deadline_s ({self.config.call_deadline_s:g} s)")
                else:
                    call.permit = self._breaker.acquire(now)
                    if call.permit is None:
                        refusal = ("unavailable", self._breaker_reason(now))
                    else:
                        self._in_flight += 1
                        self._calls += 1
            if refusal is not None:
                self._finish(call, *refusal)
                continue
            task = self._loop.create_task(self._call(call))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, call: Call) -> None:
        permit, image = call.permit, call.image
        if permit is None or image is None:
            raise RuntimeError("a call was started without a breaker permit or a frame (a bug in _dispatch)")
        settled = finished = False
        try:
            try:
                request = await self._loop.run_in_executor(self._encoder, functools.partial(
                    build_request, image, call.leader.event, call.decision,
                    template_id=self.config.template_id, max_side=self.config.image_max_side,
                    jpeg_quality=self.config.jpeg_quality, crop_margin=self.config.crop_margin,
                    max_crops=self.config.max_crops))
            except (ValueError, cv2.error) as exc:  # an image OpenCV cannot encode
                self._settle(permit, None)
                settled = finished = True
                self._finish(call, "rejected", f"the frame could not be encoded for the gateway: {exc}")
                return
            call.image = image = None  # the frame is no longer needed: free it during the call
            client = self._client
            if client is None:
                raise RuntimeError("the escalation client is not open")
            timeout = max(_MIN_CALL_S, call.leader.submitted + self.config.call_deadline_s - time.monotonic())
            result = await client.describe(request, timeout)
            self._settle(permit, (result.healthy, result.reason, result.code))
            settled = finished = True
            self._finish(call, result.status, result.reason, result.answer, result.latency_ms)
        except asyncio.CancelledError:
            with self._lock:
                self._abandoned += 1
            raise
        except Exception as exc:  # a bug (the client maps every gRPC failure): the frames still get published
            log.exception("escalation call failed", extra={"event_id": call.leader.event.event_id})
            if not settled:
                self._settle(permit, None)
                settled = True
            if not finished:
                self._finish(call, "unavailable", f"the escalation client failed: {exc!r} (a bug; see the agent's log)")
        finally:
            if not settled:
                self._settle(permit, None)
            self._dispatch()

    def _settle(self, permit: Permit, result: tuple[bool, str | None, str] | None) -> None:
        """Free the call slot; record the call's result with the breaker (None: the call was never made)."""
        with self._lock:
            self._in_flight -= 1
            if result is None:
                self._breaker.release(permit)
                return
            healthy, reason, code = result
            self._codes[code] += 1
            self._breaker.record(permit, healthy, time.monotonic(), reason)
            if code == "INVALID_ARGUMENT" or "larger than max" in (reason or ""):
                self._warn("rejected", f"the gateway rejected a request: {reason}")

    def _finish(self, call: Call, status: EscalationStatus, reason: str | None, answer: VlmAnswer | None = None,
                latency_ms: float | None = None) -> None:
        """A call's outcome for its leader and followers: first publication, or revision 2 after a timeout."""
        leader = call.leader.event
        now = time.monotonic()
        with self._lock:
            if self._cache is not None and call.cache_key is not None:
                if answer is not None:
                    self._cache.replace(call.cache_key, Answered(answer, leader.sequence, leader.event_id, now), now)
                else:
                    self._cache.remove(call.cache_key)
            tickets, call.followers = [call.leader, *call.followers], []
        for ticket in tickets:
            if ticket.near is None:
                outcome = EscalationOutcome(  # an answer's reason: what the gateway changed to give it, if anything
                    status, reason=reason or ("; ".join(answer.notes) if answer and answer.notes else None),
                    model=answer.model if answer else None,
                    latency_ms=round(latency_ms, 2) if latency_ms is not None else None,
                    description=answer.description if answer else None)
            elif answer is not None:
                seq, event_id, distance = ticket.near
                outcome = EscalationOutcome(
                    "cached", reason=f"near-duplicate of frame {seq} (event {event_id}; {distance} of 63 hash bits "
                    "differ), answered while this frame waited", model=answer.model, description=answer.description)
            else:
                outcome = EscalationOutcome(status, reason=f"near-duplicate of frame {ticket.near[0]}, whose "
                                            f"escalation ended: {reason}")
            if ticket.published is None:
                self._publish_first(ticket, outcome, answer)
            elif answer is not None:
                with self._lock:
                    self._updates += 1
                log.debug("late answer: revision 2", extra={"camera": ticket.event.camera,
                                                            "frame": ticket.event.sequence,
                                                            "event_id": ticket.event.event_id})
                self._emit(merge(ticket.event, outcome, answer, revision=2), first=False)
            else:
                with self._lock:
                    self._late_failures += 1

    def _on_deadline(self, ticket: Ticket) -> None:
        if ticket.published is None:
            self._publish_first(ticket, EscalationOutcome("timeout", reason=(
                f"no answer within {self.config.publish_deadline_s:g} s (escalation.publish_deadline_s); an answer "
                f"within {self.config.call_deadline_s:g} s is published as revision 2")), None)

    def _publish_first(self, ticket: Ticket, outcome: EscalationOutcome, answer: VlmAnswer | None) -> None:
        """On the loop: publish a waiting frame's revision 1."""
        if ticket.timer is not None:
            ticket.timer.cancel()
        ticket.published = outcome.status
        event = merge(ticket.event, outcome, answer)
        with self._lock:
            self._waiting.discard(ticket)
            self._count_first(event)
        self._emit(event, first=True)

    def _emit(self, event: TagEvent, first: bool) -> None:
        try:
            self._sink.publish_event(event)
        except Exception:  # noqa: BLE001  an outbox failure must not stop the escalation thread
            with self._lock:
                self._publish_failed += 1
            log.exception("publishing an escalated event failed", extra={
                "camera": event.camera, "frame": event.sequence, "event_id": event.event_id,
                "revision": event.revision})

    # -- breaker, logs, stats --------------------------------------------------------------------------

    def _breaker_reason(self, now: float) -> str:
        """Under the lock: why the breaker refused."""
        if self._breaker.state(now) == "half_open":
            return "circuit breaker half-open: a probe call is testing the gateway"
        return (f"circuit breaker open after repeated failures (last: {self._breaker.last_failure}); next probe in "
                f"{self._breaker.retry_in(now):.1f} s")

    def _breaker_changed(self, old: BreakerState, new: BreakerState, reason: str) -> None:
        """Called by the breaker, under the lock."""
        level = logging.INFO if new == "half_open" else logging.WARNING
        what = {"open": "opened: uncertain frames are published as unavailable",
                "half_open": "half-open: probing the gateway", "closed": "closed: escalating again"}[new]
        log.log(level, "escalation circuit breaker %s", what, extra={"from": old, "to": new, "reason": reason,
                                                                      "gateway": self.config.gateway})

    def _warn(self, key: str, message: str) -> None:
        """Under the lock: a warning at most once a minute per ``key``, with the number left out since."""
        now = time.monotonic()
        last, skipped = self._warned.get(key, (-_WARN_EVERY_S, 0))
        if now - last >= _WARN_EVERY_S:
            self._warned[key] = (now, 0)
            log.warning(message, extra={"suppressed_since_last": skipped, "gateway": self.config.gateway})
        else:
            self._warned[key] = (last, skipped + 1)

    def stats(self) -> EscalationStats:
        now = time.monotonic()
        with self._lock:
            return EscalationStats(
                statuses=dict(self._statuses), verdicts=dict(self._verdicts), updates=self._updates,
                late_failures=self._late_failures, abandoned=self._abandoned, calls=self._calls,
                codes=dict(self._codes), in_flight=self._in_flight, queued=len(self._queue),
                waiting=len(self._waiting), breaker=self._breaker.state(now), breaker_opens=self._breaker.opens,
                cache_hits=self._cache_hits, cache_joins=self._cache_joins,
                cache_entries=len(self._cache) if self._cache is not None else 0, refused=dict(self._refused),
                publish_failed=self._publish_failed)

