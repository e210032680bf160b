#!/usr/bin/env python3
"""The fleet on one machine, measured: agents, two gateways, three Ollama servers of different speeds, one broker;
one Ollama stopped and one gateway SIGKILLed mid-run (tests/fleet/harness.py, the same scenario as
tests/fleet/test_fleet.py, longer).

    python scripts/bench_fleet.py [--agents 4] [--fps 2] [--seconds 40] [--scale 0.1]
                                  [--kill-ollama-at 15] [--kill-gateway-at 25] [--no-kills]

The fake Ollamas answer in a 7B vision model's time on one GPU (means 2, 4 and 8 s per image, each answer within
+-50 %, one at a time) times ``--scale``. Printed: each server's answers, its answers per second while up and its
share next to its share of the capacity (speed); the escalation latency of the answered frames (p50, p99, max);
frames whose event was made past the publish deadline (goal 0); events delivered on the broker (by event_id) vs
frames inspected (goal equal); the frames' escalation statuses, and the reasons of those not answered.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.gateway.stats import percentile  # noqa: E402
from tests.fleet.harness import SERVERS, FleetPlan, FleetResult, run_fleet  # noqa: E402


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--fps", type=float, default=2.0, help="each agent's camera rate")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long the cameras run")
    parser.add_argument("--scale", type=float, default=0.1, help="service times are the realistic ones times this")
    parser.add_argument("--kill-ollama-at", type=float, default=15.0, help="stop ollama-mid at this second")
    parser.add_argument("--kill-gateway-at", type=float, default=25.0, help="SIGKILL gateway 2 at this second")
    parser.add_argument("--no-kills", action="store_true", help="stop nothing: the spread at steady load")
    parser.add_argument("--publish-deadline", type=float, default=2.0)
    parser.add_argument("--call-deadline", type=float, default=4.0)
    args = parser.parse_args(argv)
    if not 1 <= args.agents <= 16 or args.fps <= 0 or args.seconds < 5 or not 0 < args.scale <= 1:
        parser.error("expected --agents 1..16, --fps > 0, --seconds >= 5 and --scale in (0, 1]")
    if not args.no_kills and not 0 < args.kill_ollama_at < args.kill_gateway_at < args.seconds:
        parser.error("expected 0 < --kill-ollama-at < --kill-gateway-at < --seconds (or --no-kills)")
    return args


def report(result: FleetResult) -> None:
    plan = result.plan
    speeds = {name: 1 / mean_s for name, mean_s in SERVERS}
    total_rate = sum(result.rate(name) for name, _ in SERVERS) or 1.0
    print(f"fleet: {plan.agents} agents at {plan.fps:g} fps for {plan.run_s:g} s, 2 gateways, 3 Ollamas "
          f"(service time x {plan.scale:g}), publish deadline {plan.publish_deadline_s:g} s")
    print(f"{'server':<12} {'mean s':>7} {'answers':>8} {'up s':>6} {'per s':>6} {'share':>6} {'speed share':>12}")
    for name, mean_s in SERVERS:
        print(f"{name:<12} {mean_s * plan.scale:>7.2f} {result.answered_by[name]:>8} {result.alive_s[name]:>6.1f} "
              f"{result.rate(name):>6.2f} {result.rate(name) / total_rate:>6.2f} "
              f"{speeds[name] / sum(speeds.values()):>12.2f}")
    if result.before_kill:
        print(f"answers before the Ollama was stopped: {result.before_kill}")
    lat = result.latencies_ms
    if lat:
        print(f"escalation latency of {len(lat)} answered frames: p50 {percentile(lat, 0.5):.0f} ms, "
              f"p99 {percentile(lat, 0.99):.0f} ms, max {max(lat):.0f} ms")
    print(f"frames past the publish deadline (+{plan.deadline_slack_s:g} s): {result.past_deadline} "
          f"(longest wait {max(result.waits_s, default=0):.2f} s)")
    print(f"events delivered / expected: {result.delivered} / {result.expected}")
    if result.gateway_killed:
        print(f"gateway 2 SIGKILLed with {result.in_flight_at_kill} call(s) in progress at an Ollama")
    print("statuses: " + ", ".join(f"{k} {v}" for k, v in result.statuses.most_common()))
    for phase, statuses in result.phases():
        print(f"  {phase}: " + ", ".join(f"{k} {v}" for k, v in statuses.most_common()))
    for reason, n in result.reasons.most_common(6):
        print(f"  {n} x {reason}")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    plan = FleetPlan(agents=args.agents, fps=args.fps, run_s=args.seconds, scale=args.scale,
                     kill_ollama=None if args.no_kills else "ollama-mid", kill_ollama_at_s=args.kill_ollama_at,
                     kill_gateway_at_s=None if args.no_kills else args.kill_gateway_at,
                     publish_deadline_s=args.publish_deadline, call_deadline_s=args.call_deadline)
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as work:
        result = run_fleet(plan, pathlib.Path(work))
    report(result)
    return 0 if result.past_deadline == 0 and result.delivered == result.expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
