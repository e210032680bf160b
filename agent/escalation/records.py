"""The escalator's records: its counters (:class:`EscalationStats`), one escalated frame's event until it is
published (:class:`Ticket`), one Describe call with its frames (:class:`Call`), and a known answer in the dedupe
cache (:class:`Answered`). Plain data; :class:`~agent.escalation.escalator.Escalator` keeps them under its lock."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np

from agent.core.decision import TriageDecision
from agent.core.event import EscalationStatus, TagEvent
from agent.escalation.breaker import BreakerState, Permit
from agent.escalation.merge import VlmAnswer

__all__ = ["Answered", "Call", "EscalationStats", "Ticket"]


@dataclasses.dataclass(frozen=True)
class EscalationStats:
    """Counters of the escalation thread, for the stats topic and the run summary."""

    statuses: dict[str, int]  # escalated frames by the status of their first publication (every status listed)
    verdicts: dict[str, int]  # ... and by their published verdict
    updates: int  # revision 2 publications (an answer after the publish deadline)
    late_failures: int  # calls that failed after their frame was published with `timeout`
    abandoned: int  # calls cancelled at shutdown
    calls: int  # Describe calls started
    codes: dict[str, int]  # gRPC status codes of finished calls
    in_flight: int
    queued: int  # frames waiting for a call slot
    waiting: int  # frames not yet published (queued, in flight, or following a pending call)
    breaker: BreakerState
    breaker_opens: int
    cache_hits: int  # frames published `cached` from a known answer
    cache_joins: int  # frames that waited for a near-duplicate's pending call
    cache_entries: int
    refused: dict[str, int]  # frames not sent, by why: breaker_open, rate_limit, queue_full, followers_full, stopping
    publish_failed: int  # events the sink raised for (logged)


@dataclasses.dataclass(eq=False)
class Ticket:
    """One escalated frame's event until it is published (and, after a timeout, until its call ends)."""

    event: TagEvent
    submitted: float  # time.monotonic()
    publish_at: float
    near: tuple[int, str, int] | None = None  # a follower: (leader's sequence, leader's event id, hash distance)
    published: EscalationStatus | None = None
    timer: asyncio.TimerHandle | None = None


@dataclasses.dataclass(eq=False)
class Call:
    """One Describe call, for a leader frame and its near-duplicate followers."""

    image: np.ndarray | None  # dropped once the request is encoded
    decision: TriageDecision
    leader: Ticket
    followers: list[Ticket] = dataclasses.field(default_factory=list)
    cache_key: int | None = None
    permit: Permit | None = None


@dataclasses.dataclass(frozen=True)
class Answered:
    """A finished answer in the dedupe cache."""

    answer: VlmAnswer
    sequence: int
    event_id: str
    at: float
