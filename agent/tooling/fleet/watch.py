"""A box's live escalation rate, read from its agent's ``/metrics``: the share of tag events whose escalation
status is not ``not_needed`` (the prefilter was unsure), between two readings of the counters
``edge_agent_escalations_total{status=...}``."""

from __future__ import annotations

import dataclasses
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from agent.errors import EdgeAgentError

__all__ = ["EscalationCount", "WatchResult", "judge_watch", "metrics_url", "read_escalations"]

_FAMILY = "edge_agent_escalations"  # the parser drops the _total of a counter's family name


@dataclasses.dataclass(frozen=True)
class EscalationCount:
    events: float
    escalated: float

    def rate_since(self, before: EscalationCount) -> tuple[float, float] | None:
        """(escalated share, events) between ``before`` and this reading; None when no event came."""
        events = self.events - before.events
        if events <= 0:
            return None
        return (self.escalated - before.escalated) / events, events


@dataclasses.dataclass(frozen=True)
class WatchResult:
    ok: bool
    detail: str
    before: float | None = None
    after: float | None = None


def metrics_url(health_url: str) -> str:
    """``http://HOST:PORT/metrics`` beside the agent's ``/healthz``."""
    return health_url.removesuffix("/healthz") + "/metrics"


def read_escalations(url: str, timeout_s: float = 5.0) -> EscalationCount:
    """The escalation counters now; EdgeAgentError when the agent's /metrics does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:  # noqa: S310 (the agent's own endpoint)
            text = reply.read().decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        raise EdgeAgentError(f"the agent's {url} does not answer ({exc}); the escalation rate cannot be watched") \
            from None
    events = escalated = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != _FAMILY:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                events += sample.value
                escalated += 0.0 if sample.labels.get("status") == "not_needed" else sample.value
    return EscalationCount(events, escalated)


def judge_watch(before_window: tuple[EscalationCount, EscalationCount],
                after_window: tuple[EscalationCount, EscalationCount], max_rise: float) -> WatchResult:
    """The rate after the swap against the rate before: refused when it rose by more than ``max_rise`` or when
    a window saw no event (nothing to judge on: a stopped line is no evidence)."""
    before = before_window[1].rate_since(before_window[0])
    after = after_window[1].rate_since(after_window[0])
    if before is None or after is None:
        which = "before" if before is None else "after"
        return WatchResult(False, f"no tag event in the window {which} the swap: the escalation rate cannot be "
                           "judged (is the line running?)")
    words = (f"escalation rate {before[0]:.3f} before ({before[1]:.0f} events), {after[0]:.3f} after "
             f"({after[1]:.0f} events), allowed rise {max_rise:.3f}")
    return WatchResult(after[0] <= before[0] + max_rise, words, before[0], after[0])


def window(url: str, seconds: float, sleep: Callable[[float], None] = time.sleep) -> tuple[EscalationCount,
                                                                                       EscalationCount]:
    """Two readings ``seconds`` apart."""
    first = read_escalations(url)
    sleep(seconds)
    return first, read_escalations(url)
