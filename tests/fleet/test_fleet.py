"""The fleet on one machine (issue #21's Must show): 4 agents on synthetic cameras, 2 gateways (each its own
process), 3 fake Ollama servers of different speeds behind each gateway's pool, one Mosquitto. One Ollama is
stopped and one gateway SIGKILLed mid-run. Every frame's event is made within its publish deadline, every event
reaches the broker (counted by event_id), no frame is published unavailable (the pool and gRPC's round_robin
send the calls elsewhere), and the faster a server, the more it answered.

Service times: a 7B vision model's 2, 4 and 8 s per image (each answer within +-50 %) times 0.05 here (times
0.1 in scripts/bench_fleet.py by default); see tests/fleet/harness.py. The slow variant runs 30 s."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from tests.fleet.harness import FleetPlan, FleetResult, run_fleet


def check(result: FleetResult) -> None:
    summary = (f"{result.statuses}, {result.in_flight_at_kill} in flight at the kill, answered by "
               f"{result.answered_by} ({result.before_kill} before the kill), alive {result.alive_s}, "
               f"reasons {result.reasons.most_common(8)}")
    assert result.expected > 0 and result.delivered == result.expected, summary  # every event, once
    assert result.past_deadline == 0, max(result.waits_s)
    # no frame went without an answer for the deaths: the calls were answered elsewhere in time
    assert result.statuses["answered"] > 0 and not result.costly, summary
    assert result.gateway_killed and result.in_flight_at_kill >= 1, summary  # killed with a call in progress
    # spread by load and speed: over the run the fast server answered most, and, per second up, at least 1.5 times
    # as often as the slow one (4 times at full load: bench_fleet.py). (Not "before the kill": on a loaded box only
    # a handful of calls come before it, e.g. 1 / 2 / 2, and so few say nothing about the spread.)
    by = result.answered_by
    assert by["ollama-fast"] > max(by["ollama-mid"], by["ollama-slow"]), summary
    assert result.rate("ollama-fast") >= 1.5 * result.rate("ollama-slow"), summary


def test_four_agents_two_gateways_three_ollamas_lose_nothing_when_one_ollama_and_one_gateway_die(
        tmp_path: pathlib.Path) -> None:
    check(run_fleet(FleetPlan(), tmp_path))


@pytest.mark.slow
def test_the_fleet_for_longer(tmp_path: pathlib.Path) -> None:
    check(run_fleet(FleetPlan(run_s=30.0, kill_ollama_at_s=10.0, kill_gateway_at_s=20.0), tmp_path))


BENCH = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_fleet.py"


@pytest.mark.parametrize(("args", "words"), [
    (["--agents", "0"], "expected --agents 1..16, --fps > 0, --seconds >= 5 and --scale in (0, 1]"),
    (["--kill-ollama-at", "30", "--kill-gateway-at", "20"], "expected 0 < --kill-ollama-at < --kill-gateway-at"),
])
def test_the_bench_refuses_bad_arguments_saying_what_it_expects(args: list[str], words: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
