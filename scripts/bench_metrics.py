"""How long one /metrics scrape takes to render: prometheus_client (today) against the hand-written
exposition of an earlier revision, side by side in one run.

    python scripts/bench_metrics.py [--baseline 7bc8b0c] [--cameras 8] [--rounds 7] [--scrapes 200]

The families are the agent's shape for --cameras cameras (camera states, frame counters, events by
verdict, three stage histograms of 15 buckets, outbox and MQTT gauges). Each round renders them
--scrapes times with each side, alternating; the medians per scrape and their ratio are printed, with
what a scrape costs at Prometheus' usual interval (15 s) and at one scrape a second. The baseline's
``agent/metrics/exposition.py`` is read with ``git show REV:...`` and given the same families.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.ops.exposition import Family, render  # noqa: E402
from agent.ops.histogram import LATENCY_BUCKETS_S, Histogram  # noqa: E402

Render = Callable[[list[Family]], str]


def baseline_render(rev: str) -> Render:
    """The ``render`` of ``agent/metrics/exposition.py`` at ``rev``."""
    source = subprocess.run(["git", "show", f"{rev}:agent/metrics/exposition.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    source = source.replace("agent.metrics.histogram", "agent.ops.histogram")  # where it lives since the move
    module = types.ModuleType("baseline_exposition")
    sys.modules[module.__name__] = module  # its dataclass looks itself up there
    exec(compile(source, f"{rev}:agent/metrics/exposition.py", "exec"), module.__dict__)  # noqa: S102
    func: Render = module.render
    return func


def agent_like_families(cameras: int) -> list[Family]:
    states = ("connecting", "online", "reconnecting", "ended", "failed", "stopped")
    fams = [Family("edge_agent_info", "gauge", "info").add(1, device="line3-box1", version="0.1.0"),
            Family("edge_agent_uptime_seconds", "gauge", "uptime").add(86400.123)]
    state = Family("edge_agent_camera_state", "gauge", "state")
    counters = [Family(f"edge_agent_frames_{what}_total", "counter", what)
                for what in ("read", "corrupt", "inspected", "dropped")]
    events = Family("edge_agent_events_total", "counter", "events")
    for i in range(cameras):
        cam = f"cam{i}"
        for s in states:
            state.add(1 if s == "online" else 0, camera=cam, state=s)
        for n, fam in enumerate(counters):
            fam.add(1_000_000 + 17 * i + n, camera=cam)
        for verdict in ("pass", "defect", "uncertain"):
            events.add(40_000 + i, camera=cam, verdict=verdict, decided_by="prefilter")
    fams += [state, *counters, events]
    durations = Family("edge_agent_stage_duration_seconds", "histogram", "latency")
    for stage in ("prefilter", "publish", "escalation"):
        hist = Histogram(LATENCY_BUCKETS_S)
        for k in range(2000):
            hist.observe(0.0005 * (k % 97))
        durations.add_histogram(hist.snapshot(), stage=stage)
    fams.append(durations)
    fams += [Family(f"edge_agent_outbox_{what}", "gauge", what).add(12345) for what in ("pending_events",
                                                                                        "pending_bytes")]
    return fams


def per_scrape_ms(func: Callable[[], str], scrapes: int) -> float:
    t0 = time.perf_counter()
    for _ in range(scrapes):
        func()
    return (time.perf_counter() - t0) * 1000.0 / scrapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="7bc8b0c", help="git revision with the hand-written exposition")
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    old = baseline_render(args.baseline)
    fams = agent_like_families(args.cameras)
    sides: dict[str, Callable[[], str]] = {
        f"hand-written ({args.baseline})": lambda: old(fams),
        "prometheus_client, ours only": lambda: render(fams, standard=False),
        "prometheus_client + process metrics": lambda: render(fams),
    }
    lines = {name: len(func().splitlines()) for name, func in sides.items()}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, func in sides.items():
            times[name].append(per_scrape_ms(func, args.scrapes))
    base = statistics.median(times[next(iter(sides))])
    print(f"{args.cameras} cameras, {args.rounds} rounds of {args.scrapes} scrapes per side, medians")
    print(f"{'side':40} {'lines':>6} {'ms/scrape':>10} {'vs hand':>8} {'CPU at 1/15 s':>14} {'at 1/s':>8}")
    for name in sides:
        ms = statistics.median(times[name])
        print(f"{name:40} {lines[name]:6d} {ms:10.3f} {ms / base:7.2f}x {ms / 15000 * 100:13.4f}% "
              f"{ms / 1000 * 100:7.3f}%")


if __name__ == "__main__":
    main()
