"""Per-camera token buckets on numbers."""

from __future__ import annotations

import pytest

from agent.escalation.ratelimit import CameraRateLimiter, TokenBucket


def test_burst_then_refill_at_the_rate() -> None:
    b = TokenBucket(per_minute=30, burst=3)  # one token every 2 s
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.wait_s(0.0) == pytest.approx(2.0)
    assert not b.take(1.9)  # 0.95 of a token
    assert b.take(2.0)  # 1.0
    assert not b.take(2.0)


def test_refill_is_capped_at_burst() -> None:
    b = TokenBucket(per_minute=60, burst=2)
    assert b.take(0.0) and b.take(0.0)
    # 100 s later: 100 tokens earned, 2 kept
    assert [b.take(100.0) for _ in range(3)] == [True, True, False]


def test_time_going_backwards_earns_nothing() -> None:
    b = TokenBucket(per_minute=60, burst=1)
    assert b.take(10.0)
    assert not b.take(5.0) and not b.take(10.5)
    assert b.take(11.0)


@pytest.mark.parametrize(
    ("limits", "camera", "expected"),
    [
        ({}, "a", [True, True, False]),  # the default: burst 2
        ({"a": (60.0, 1)}, "a", [True, False, False]),  # the camera's own: burst 1
        ({"b": (60.0, 1)}, "a", [True, True, False]),  # another camera's override does not apply
        ({"a": (0.0, 5)}, "a", [False, False, False]),  # rate 0: never escalated
    ],
)
def test_cameras_have_their_own_buckets(limits: dict[str, tuple[float, int]], camera: str,
                                        expected: list[bool]) -> None:
    limiter = CameraRateLimiter(limits, default=(6.0, 2))
    assert [limiter.allow(camera, 0.0) for _ in range(3)] == expected
    assert limiter.allow("other", 0.0)  # a busy camera does not spend another's budget


def test_refusal_says_why() -> None:
    limiter = CameraRateLimiter({"off": (0.0, 1)}, default=(30.0, 1))
    assert limiter.allow("cam", 0.0) and not limiter.allow("cam", 0.5)
    assert limiter.refusal("cam", 0.5) == "camera cam spent its escalation budget (30/min, burst 1); next in 1.5 s"
    assert limiter.refusal("off", 0.0) == "escalation is off for camera off (per_minute: 0)"


def test_new_limits_keep_the_tokens_left_and_apply_from_now() -> None:
    limiter = CameraRateLimiter({"a": (60.0, 3)}, default=(60.0, 3))
    assert [limiter.allow("a", 0.0) for _ in range(2)] == [True, True]  # a has 1 token left
    assert limiter.allow("b", 0.0) and limiter.allow("c", 0.0)  # b and c: 2 left each
    # a reload: a earns 6/min now (no refill from 0 s to 1 s: 0.1 token), b is capped at burst 1, c is turned off
    limiter.set_limits({"a": (6.0, 3), "b": (60.0, 1), "c": (0.0, 1)}, default=(60.0, 3))
    assert limiter.allow("a", 1.0) and not limiter.allow("a", 1.0)  # 1 + 0.1 tokens: one escalation
    assert limiter.allow("b", 0.0) and not limiter.allow("b", 0.0)  # 2 tokens cut to the new burst of 1
    assert not limiter.allow("c", 0.0)  # per_minute 0: never
    assert limiter.refusal("a", 1.0) == "camera a spent its escalation budget (6/min, burst 3); next in 9.0 s"
