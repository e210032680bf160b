"""A gateway in front of several Ollama servers: :class:`VlmPool` spreads the calls over them.

Each server (``ollama.servers``) is an :class:`~agent.gateway.vlm.OllamaVlm` of its
own (its own HTTP client, model keeper and context length); the pool is a
:class:`~agent.gateway.vlm.Vlm` like it, so the gateway's service, health and
admission do not know the difference.

Choosing a server for a call: among the servers whose last health check passed and
whose circuit breaker lets a call through, the one with the fewest outstanding
calls per ``weight``, counting the new one (weighted least outstanding requests); among
equals, the one that answered fastest lately (an exponentially weighted mean of its
answers' times, a server not yet timed first), and among equals still, in turn. So a
fast server, which gives its calls back sooner, is given more of them: at full
load each server's share follows its speed, and at light load the fastest free
server answers. When no server is both healthy and
allowed by its breaker, the ones the breaker allows are tried anyway (the health
check may be stale); when the breakers allow none, the call fails at once with
UNAVAILABLE, naming each server's state.

A server that fails a call in a way that says the *server* is at fault
(:data:`SERVER_FAULTS`: unreachable, a connection broken mid-call, HTTP 503/5xx,
the model still loading, missing or failing there) counts against its breaker
(:class:`~agent.escalation.breaker.CircuitBreaker`, ``pool.failure_threshold`` in a
row open it for ``pool.open_s``), and the call is asked ONCE more of another
server, within what is left of the call's deadline. A timeout is not a server
fault (a slow or queued server is not a dead one; least outstanding already sends
it less), nor is an invalid answer or a refused request: those are not retried.

Health (:meth:`VlmPool.check`): every server is checked at once (``OllamaVlm.check``:
``/api/show`` and ``/api/ps``, and a model load when it is not loaded), each within
``ollama.connect_timeout_s`` + 1 s so that a server that hangs holds no other back; the pool is
SERVING while at least one server is, and a server going down or coming back is
logged once. :meth:`VlmPool.servers` is what ``/metrics`` and ``/healthz`` show.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

from agent.errors import (
    RequestRejected,
    VlmError,
    VlmInvalidAnswer,
    VlmLoading,
    VlmModelFailed,
    VlmModelMissing,
    VlmTimeout,
    VlmUnavailable,
)
from agent.escalation.breaker import BreakerState, CircuitBreaker, Permit
from agent.gateway.config import OllamaConfig
from agent.gateway.poolconfig import OllamaServerConfig, PoolConfig
from agent.gateway.templates import Prompt
from agent.gateway.vlm import OllamaVlm, VlmResult
from agent.redact import redact

_EWMA = 0.3  # the weight of the newest answer's time in a server's mean

__all__ = ["OUTCOMES", "SERVER_FAULTS", "Member", "ServerView", "VlmPool"]

log = logging.getLogger(__name__)

SERVER_FAULTS: tuple[type[VlmError], ...] = (VlmUnavailable, VlmLoading, VlmModelMissing, VlmModelFailed)
"""Failures that say the server is at fault: counted against its breaker, and the call retried elsewhere."""


@dataclasses.dataclass(frozen=True)
class ServerView:
    """One server as ``/metrics`` and ``/healthz`` show it (a copy, safe to read from another thread)."""

    name: str
    url: str
    weight: float
    outstanding: int
    healthy: bool
    problem: str | None
    breaker: BreakerState
    outcomes: dict[str, int]


@dataclasses.dataclass
class Member:
    """One server of the pool and what the pool knows of it."""

    name: str
    url: str  # redacted: shown in logs and /healthz
    weight: float
    vlm: OllamaVlm
    breaker: CircuitBreaker
    outstanding: int = 0
    problem: str | None = None  # the last health check's reason; None: healthy (or not checked yet)
    outcomes: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(["ok", *(label for _, label in OUTCOMES), "failed"], 0))
    """Calls by outcome; every key is there from the start (readers on other threads copy it)."""
    answer_s: float = 0.0
    """Exponentially weighted mean of its answers' times (0 until it answered)."""
    state: BreakerState = "closed"
    """The breaker's state when the pool last looked (on the event loop), for readers on other threads."""

    def allowed(self, now: float) -> bool:
        """Whether the breaker lets a call through now."""
        allowed = self.breaker.would_allow(now)
        self.state = self.breaker.state(now)
        return allowed

    def usable(self, now: float) -> bool:
        """Healthy at the last check, allowed by the breaker, its model not loading or failed."""
        return self.allowed(now) and self.problem is None and self.vlm.keeper.state not in ("loading", "failed")


OUTCOMES: tuple[tuple[type[Exception], str], ...] = (
    (VlmLoading, "loading"), (VlmUnavailable, "unavailable"), (VlmModelFailed, "model_failed"),
    (VlmModelMissing, "model_missing"), (VlmTimeout, "timeout"), (VlmInvalidAnswer, "invalid_answer"),
    (RequestRejected, "rejected"))
"""The outcome label of a failed call by its error (first match wins); an answer is "ok"."""


def _outcome(exc: Exception) -> str:
    return next((label for kind, label in OUTCOMES if isinstance(exc, kind)), "failed")


class VlmPool:
    """Several Ollama servers behind one :class:`~agent.gateway.vlm.Vlm` (see the module doc)."""

    def __init__(self, members: Sequence[Member], model: str, timeout_s: float, check_timeout_s: float = 5.0) -> None:
        if not members:
            raise ValueError("a pool needs at least one server")
        self.members = list(members)
        self.model = model
        self._timeout_s = timeout_s
        self._check_timeout_s = check_timeout_s
        """Longest one server's health check may take: a server that hangs cannot hold the others' back."""
        self._turn = 0
        self.retried = 0
        """Calls asked once more of another server after a server fault."""

    @classmethod
    def from_config(cls, config: OllamaConfig, pool: PoolConfig) -> VlmPool:
        """A pool of ``config.server_list()``, each server an OllamaVlm of ``config`` with its URL."""
        return cls([cls._member(config, server, pool) for server in config.server_list()], config.model,
                   config.timeout_s, check_timeout_s=config.connect_timeout_s + 1.0)

    @staticmethod
    def _member(config: OllamaConfig, server: OllamaServerConfig, pool: PoolConfig) -> Member:
        name = server.label

        def logged(old: BreakerState, new: BreakerState, reason: str) -> None:
            level = logging.WARNING if new == "open" else logging.INFO
            log.log(level, "Ollama server %s: breaker %s -> %s: %s", name, old, new, redact(reason),
                    extra={"server": name})

        vlm = OllamaVlm.from_config(config.model_copy(update={"host": server.url, "servers": []}))
        return Member(name=name, url=redact(server.url), weight=server.weight, vlm=vlm,
                      breaker=CircuitBreaker(pool.failure_threshold, pool.open_s, on_change=logged))

    @property
    def on_load_end(self) -> Callable[[], None] | None:
        return self.members[0].vlm.on_load_end

    @on_load_end.setter
    def on_load_end(self, callback: Callable[[], None] | None) -> None:
        for member in self.members:
            member.vlm.on_load_end = callback

    async def aclose(self) -> None:
        for member in self.members:
            await member.vlm.aclose()

    # -- one question -----------------------------------------------------------------------

    async def ask(self, prompt: Prompt, timeout: float | None = None) -> VlmResult:
        """Ask the least loaded usable server; after a server fault, once more another one within the
        deadline. Raises what the last server raised, or VlmUnavailable when no server may be asked."""
        budget = self._timeout_s if timeout is None else min(timeout, self._timeout_s)
        deadline = time.monotonic() + budget
        first = self._pick(exclude=())
        if first is None:
            now = time.monotonic()
            raise VlmUnavailable("no Ollama server of the pool may be asked now: " + "; ".join(
                f"{m.name}: {self._state_words(m, now)}" for m in self.members))
        try:
            return await self._ask(first, prompt, deadline)
        except SERVER_FAULTS as exc:
            second = self._pick(exclude=(first,))
            if second is None or deadline - time.monotonic() <= 0:
                raise
            self.retried += 1
            log.debug("retrying elsewhere", extra={"server": first.name, "other": second.name, "error": str(exc)})
            return await self._ask(second, prompt, deadline)

    async def _ask(self, member: Member, prompt: Prompt, deadline: float) -> VlmResult:
        permit: Permit | None = member.breaker.acquire(time.monotonic())
        member.outstanding += 1
        started = time.monotonic()
        try:
            result = await member.vlm.ask(prompt, timeout=max(deadline - time.monotonic(), 0.001))
        except (VlmError, RequestRejected) as exc:
            member.outcomes[_outcome(exc)] += 1
            self._settle(member, permit, exc)
            raise
        except BaseException:  # cancelled (the caller went away): no sign of the server
            self._settle(member, permit, None, decided=False)
            raise
        finally:
            member.outstanding -= 1
        member.outcomes["ok"] += 1
        took = time.monotonic() - started
        member.answer_s = took if member.answer_s == 0 else (1 - _EWMA) * member.answer_s + _EWMA * took
        self._settle(member, permit, None)
        return result

    @staticmethod
    def _settle(member: Member, permit: Permit | None, exc: Exception | None, decided: bool = True) -> None:
        """Tell the breaker: a server fault is a failure; a timeout or a cancel decides nothing (a slow server
        is not a dead one); anything else (an answer, an invalid one) shows the server works."""
        if permit is None:
            return
        if not decided or isinstance(exc, VlmTimeout):
            member.breaker.release(permit)
        elif isinstance(exc, SERVER_FAULTS):
            member.breaker.record(permit, False, time.monotonic(), str(exc))
        else:
            member.breaker.record(permit, True, time.monotonic())
        member.state = member.breaker.state(time.monotonic())

    def _pick(self, exclude: Sequence[Member]) -> Member | None:
        """The least loaded usable server not in ``exclude`` (see the module doc); None when the breakers
        allow none."""
        now = time.monotonic()
        others = [m for m in self.members if m not in exclude]
        candidates = [m for m in others if m.usable(now)] or [m for m in others if m.allowed(now)]
        if not candidates:
            return None
        self._turn += 1
        start = self._turn % len(candidates)
        ordered = candidates[start:] + candidates[:start]
        return min(ordered, key=lambda m: ((m.outstanding + 1) / m.weight, m.answer_s))  # load with this call

    @staticmethod
    def _state_words(member: Member, now: float) -> str:
        if not member.allowed(now):
            wait = member.breaker.retry_in(now)
            return f"breaker open ({member.breaker.last_failure or 'failing'}; next try in {wait:.1f} s)"
        return member.problem or f"model {member.vlm.keeper.state}"

    # -- health -----------------------------------------------------------------------------

    async def check(self) -> str | None:
        """Check every server at once; None while at least one is healthy, else every server's reason."""
        results = await asyncio.gather(*(self._check_one(m) for m in self.members), return_exceptions=True)
        for member, result in zip(self.members, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancelled: the health poll is stopping
                log.error("health check of Ollama server %s failed", member.name, exc_info=result)
                result = f"its health check failed: {type(result).__name__}"
            self._set_problem(member, result)
            member.allowed(time.monotonic())  # refresh the breaker state that /metrics reads
        if any(m.problem is None for m in self.members):
            return None
        reasons = "; ".join(f"{m.name}: {m.problem}" for m in self.members)
        loading = all((m.problem or "").startswith("loading:") for m in self.members)
        return f"loading: no Ollama server is ready ({reasons})" if loading else \
            f"no Ollama server of the pool is available ({reasons})"

    async def _check_one(self, member: Member) -> str | None:
        try:
            return await asyncio.wait_for(member.vlm.check(), self._check_timeout_s)
        except asyncio.TimeoutError:
            return f"Ollama at {member.url} did not answer the health check within {self._check_timeout_s:g} s"

    @staticmethod
    def _set_problem(member: Member, problem: str | None) -> None:
        if (problem is None) != (member.problem is None):
            if problem is None:
                log.info("Ollama server %s is back", member.name, extra={"server": member.name})
            else:
                log.log(logging.INFO if problem.startswith("loading:") else logging.WARNING,
                        "Ollama server %s is down: %s", member.name, redact(problem), extra={"server": member.name})
        member.problem = problem

    def servers(self) -> list[ServerView]:
        """Each server's load, health, breaker and outcomes, for /metrics and /healthz."""
        return [ServerView(m.name, m.url, m.weight, m.outstanding, m.problem is None, m.problem, m.state,
                           dict(m.outcomes)) for m in self.members]
