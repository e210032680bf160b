"""The circuit breaker on numbers: closed -> open -> half-open -> closed/open, one probe at a time."""

from __future__ import annotations

import pytest

from agent.escalation.breaker import CircuitBreaker


def failing(b: CircuitBreaker, n: int, now: float) -> None:
    for _ in range(n):
        permit = b.acquire(now)
        assert permit == "call"
        b.record(permit, False, now, "UNAVAILABLE: down")


def test_opens_after_threshold_failures_in_a_row() -> None:
    changes: list[tuple[str, str]] = []
    b = CircuitBreaker(3, 10.0, on_change=lambda old, new, _reason: changes.append((old, new)))
    failing(b, 2, 0.0)
    assert b.state(0.0) == "closed"
    b.record(b.acquire(0.0) or "call", True, 0.0)  # a success resets the count
    failing(b, 2, 1.0)
    assert b.state(1.0) == "closed"
    failing(b, 1, 2.0)  # the third in a row
    assert b.state(2.0) == "open" and b.opens == 1 and changes == [("closed", "open")]
    assert b.acquire(2.0) is None and not b.would_allow(5.0)
    assert b.retry_in(5.0) == pytest.approx(7.0)  # opened at 2, open for 10
    assert b.last_failure == "UNAVAILABLE: down"


def test_half_open_lets_exactly_one_probe_through_and_its_success_closes() -> None:
    b = CircuitBreaker(1, 10.0)
    failing(b, 1, 0.0)
    assert b.state(9.99) == "open"
    assert b.state(10.0) == "half_open" and b.would_allow(10.0)
    assert b.acquire(10.0) == "probe"
    assert not b.would_allow(10.1) and b.acquire(10.1) is None  # only one probe at a time
    b.record("probe", True, 11.0)
    assert b.state(11.0) == "closed" and b.acquire(11.0) == "call"


def test_a_failed_probe_opens_again_for_a_full_interval() -> None:
    b = CircuitBreaker(2, 5.0)
    failing(b, 2, 0.0)
    assert b.acquire(5.0) == "probe"
    b.record("probe", False, 6.0, "DEADLINE_EXCEEDED: slow")
    assert b.state(10.9) == "open" and b.opens == 2  # reopened at 6: closed to probes until 11
    assert b.state(11.0) == "half_open"


def test_stragglers_do_not_decide_while_open() -> None:
    b = CircuitBreaker(1, 10.0)
    early = b.acquire(0.0)  # a call started while closed ...
    failing(b, 1, 0.0)  # ... another one fails and opens the breaker
    assert early is not None
    b.record(early, True, 1.0)  # the early call's success arrives late: ignored
    assert b.state(1.0) == "open"


def test_a_released_probe_lets_the_next_call_probe() -> None:
    b = CircuitBreaker(1, 1.0)
    failing(b, 1, 0.0)
    assert b.acquire(1.0) == "probe"
    b.release("probe")  # never sent (shutdown, encoding failed)
    assert b.acquire(1.0) == "probe"


@pytest.mark.parametrize(("threshold", "open_s"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_bad_settings_are_refused(threshold: int, open_s: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold, open_s)
