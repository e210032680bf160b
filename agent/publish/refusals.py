"""What the forwarder does with a message the broker refuses (a PUBACK reason code >= 0x80).

Pure bookkeeping, per topic, no I/O (:class:`agent.publish.reliable.ReliablePublisher` acts on it):

* **open**: messages of the topic are sent as they come.
* **probing**: a message was refused. It is tried again after a backoff (``backoff_s``, doubling, at
  most ``backoff_max_s``) up to ``max_tries`` tries in all; meanwhile the topic's later messages are
  *parked* (not sent), so that those delivered keep their order. Other topics are not held up.
  Accepted: the topic is open again and the parked messages go out, in order.
  Refused ``max_tries`` times: the message is dead-lettered and the topic is *refusing*.
* **refusing**: the parked and later messages are sent once each; one the broker refuses goes to
  the dead letters after that one try; the first one accepted opens the topic again. After
  ``refusing_s`` a new refusal starts a new probe (full tries), so a broker that refused for a while
  (a quota) is not written off for good.

Memory is bounded by time: a topic parks messages for at most the probe's total backoff.
"""

from __future__ import annotations

import bisect
import dataclasses
import math


@dataclasses.dataclass
class _Probe:
    head: int  # the refused row being retried
    tries: int
    retry_at: float  # math.inf while the retry is in flight


@dataclasses.dataclass(frozen=True)
class Refusal:
    """The outcome of one refusal: ``dead`` (dead-letter the row now, after ``tries``) or wait for a retry."""

    dead: bool
    tries: int


class RefusalGate:
    def __init__(self, *, max_tries: int = 3, backoff_s: float = 1.0, backoff_max_s: float = 30.0,
                 refusing_s: float = 60.0) -> None:
        if max_tries < 1:
            raise ValueError(f"max_tries must be at least 1, got {max_tries}")
        if backoff_s <= 0 or backoff_max_s < backoff_s:
            raise ValueError(f"expected 0 < backoff_s <= backoff_max_s, got {backoff_s} and {backoff_max_s}")
        self.max_tries = max_tries
        self._backoff = backoff_s
        self._backoff_max = backoff_max_s
        self._refusing_s = refusing_s
        self._probes: dict[str, _Probe] = {}
        self._parked: dict[str, list[int]] = {}
        self._refusing: dict[str, float] = {}  # topic -> when it became refusing

    def holds(self, topic: str) -> bool:
        """True while a message of ``topic`` waits for its retry: park the topic's later messages."""
        return topic in self._probes

    def park(self, topic: str, row_id: int) -> None:
        """Hold ``row_id`` back until the topic's probe ends (idempotent; kept in id order)."""
        probe = self._probes.get(topic)
        if probe is not None and probe.head == row_id:
            return
        parked = self._parked.setdefault(topic, [])
        at = bisect.bisect_left(parked, row_id)
        if at == len(parked) or parked[at] != row_id:
            parked.insert(at, row_id)

    def refused(self, topic: str, row_id: int, now: float) -> Refusal:
        probe = self._probes.get(topic)
        if probe is None:
            since = self._refusing.get(topic)
            if since is not None and now - since < self._refusing_s:
                return Refusal(dead=True, tries=1)
            self._refusing.pop(topic, None)
            if self.max_tries == 1:
                self._refusing[topic] = now
                return Refusal(dead=True, tries=1)
            self._probes[topic] = _Probe(row_id, 1, now + self._backoff)
            return Refusal(dead=False, tries=1)
        if probe.head != row_id:  # in flight when the head was refused: it waits behind the head
            self.park(topic, row_id)
            return Refusal(dead=False, tries=1)
        probe.tries += 1
        if probe.tries >= self.max_tries:
            del self._probes[topic]
            self._refusing[topic] = now
            return Refusal(dead=True, tries=probe.tries)
        probe.retry_at = now + min(self._backoff * 2 ** (probe.tries - 1), self._backoff_max)
        return Refusal(dead=False, tries=probe.tries)

    def accepted(self, topic: str, row_id: int) -> None:
        self._refusing.pop(topic, None)
        probe = self._probes.get(topic)
        if probe is not None and probe.head == row_id:
            del self._probes[topic]

    def due(self, now: float) -> list[int]:
        """Heads whose retry time has come; each is returned once per try (send it now)."""
        out = []
        for probe in self._probes.values():
            if probe.retry_at <= now:
                probe.retry_at = math.inf
                out.append(probe.head)
        return sorted(out)

    def retry_lost(self, row_id: int, now: float) -> None:
        """A retry could not be sent (disconnected, queue full): try again at ``now``."""
        for probe in self._probes.values():
            if probe.head == row_id:
                probe.retry_at = now

    def forget(self, row_id: int) -> None:
        """``row_id`` left the outbox while it waited (evicted by the outbox's bound): if it was a probe's head,
        its topic no longer waits for it."""
        for topic, probe in list(self._probes.items()):
            if probe.head == row_id:
                del self._probes[topic]

    def release(self) -> list[int]:
        """Parked messages of topics no longer probing, in id order: send them before anything newer."""
        out: list[int] = []
        for topic in [t for t in self._parked if t not in self._probes]:
            out += self._parked.pop(topic)
        return sorted(out)

    def next_retry_in(self, now: float) -> float | None:
        """Seconds until the next retry is due (None when none is scheduled)."""
        times = [p.retry_at for p in self._probes.values() if p.retry_at != math.inf]
        return max(0.0, min(times) - now) if times else None

    def waiting(self) -> int:
        """Messages held back now (probe heads and parked)."""
        return len(self._probes) + sum(len(v) for v in self._parked.values())
