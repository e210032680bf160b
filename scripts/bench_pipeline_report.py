"""What ``scripts/bench_pipeline.py`` prints after its rounds: the ratios of sides measured next to each other,
box agreement, CPU per thread, resident memory, load, and which goals hold."""

from __future__ import annotations

import argparse
import dataclasses
import statistics

MATCH_IOU = 0.5
Side = tuple[str, str, int, int, str]  # (label, worker, intra-op threads, concurrent runs, runtime)
Key = tuple[str, str]  # (model file name, side label)


def med(values: list[float]) -> float:
    return float(statistics.median(values))


def fmt_rounds(values: list[float], spec: str = ".1f") -> str:
    return " ".join(format(v, spec) for v in values)


def setup_name(setup: tuple[int, int]) -> str:
    return f"{setup[0]}x{setup[1]}"


@dataclasses.dataclass
class Rounds:
    """What the rounds measured, by (model file name, side label)."""

    fps: dict[Key, list[float]] = dataclasses.field(default_factory=dict)
    boxes: dict[Key, dict[str, list[list[float]]]] = dataclasses.field(default_factory=dict)
    cpu: dict[Key, dict[str, float]] = dataclasses.field(default_factory=dict)  # by thread, last round
    rss: dict[int, list[float]] = dataclasses.field(default_factory=lambda: {1: [], 4: []})  # peak, by cameras
    rss_running: dict[int, list[float]] = dataclasses.field(default_factory=lambda: {1: [], 4: []})  # frames flowing
    loads: list[str] = dataclasses.field(default_factory=list)
    runs_on: dict[Key, str] = dataclasses.field(default_factory=dict)  # OpenVINO sides: runtime, float precision


class Ratios:
    """Prints ratios of two sides (median of the per-round ratios) and keeps the ones with a bar."""

    def __init__(self, fps: dict[Key, list[float]]) -> None:
        self.fps = fps
        self.checks: list[tuple[str, str, float, float]] = []  # (setup, what, value, bar)

    def show(self, text: str, a: Key, b: Key, bar: float | None = None, setup: str = "") -> None:
        if a not in self.fps or b not in self.fps:
            return
        per_round = [x / y for x, y in zip(self.fps[a], self.fps[b], strict=True)]
        value = med(per_round)
        verdict = "" if bar is None else f"  must be >= {bar:g}: {'yes' if value >= bar else 'NO'}"
        print(f"  {text:<66} {value:5.2f}x   rounds: {fmt_rounds(per_round, '.2f')}{verdict}")
        if bar is not None:
            self.checks.append((setup, text, value, bar))

    def fastest(self, name: str, labels: list[str]) -> str:
        present = [lb for lb in labels if (name, lb) in self.fps]
        return max(present, key=lambda lb: med(self.fps[(name, lb)])) if present else labels[0]


def print_ratios(args: argparse.Namespace, fps: dict[Key, list[float]], sides: list[Side],
                 bare_threads: list[int]) -> list[tuple[str, str, float, float]]:
    """The ratios of sides measured next to each other; returns the ones with a bar: (setup, what, value, bar)."""
    names = [m.name for m in args.models]
    print("\nratios (median of the per-round ratios; per round):")
    r = Ratios(fps)
    fastest = {name: r.fastest(name, [f"bare t{t}" for t in bare_threads]) for name in names}
    peers = {name: r.fastest(name, ["ultralytics", "ultralytics ov"]) for name in names}
    for setup in args.setups:
        sn = setup_name(setup)
        for prefix in ("", "ov "):
            agent = f"{prefix}agent {sn}"
            for name in names:
                if not prefix:
                    r.show(f"{agent} / the fastest bare loop ({fastest[name]}), {name}", (name, agent),
                           (name, fastest[name]), 0.9, sn)
                loops = f"{prefix}bare {sn}" if prefix or setup[1] > 1 else f"bare t{setup[0]}"
                r.show(f"{agent} / {loops} (its own runtime, {setup[1]} loop(s)), {name}", (name, agent),
                       (name, loops), 0.8, sn)
                r.show(f"{agent} / the fastest ultralytics ({peers[name]}), {name}", (name, agent),
                       (name, peers[name]), 1.1, sn)
            if len(names) > 1:
                r.show(f"{agent} {names[-1]} / ultralytics {names[0]}", (names[-1], agent), (names[0], "ultralytics"),
                       2.0, sn)
        for name in names:
            r.show(f"ov agent {sn} / agent {sn} (OpenVINO / ONNX Runtime), {name}", (name, f"ov agent {sn}"),
                   (name, f"agent {sn}"))
            r.show(f"ov bare {sn} / {'bare ' + sn if setup[1] > 1 else f'bare t{setup[0]}'}, {name}",
                   (name, f"ov bare {sn}"), (name, f"bare {sn}" if setup[1] > 1 else f"bare t{setup[0]}"))
    for name in names:
        r.show(f"{fastest[name]} / ultralytics, both {name}", (name, fastest[name]), (name, "ultralytics"))
        r.show(f"ultralytics ov / ultralytics (its OpenVINO export / its ONNX Runtime), {name}",
               (name, "ultralytics ov"), (name, "ultralytics"))
    if len(names) > 1:
        for label, *_rest in sides:
            r.show(f"{label}: {names[-1]} / {names[0]}", (names[-1], label), (names[0], label))
    return r.checks


def print_details(args: argparse.Namespace, m: Rounds, checks: list[tuple[str, str, float, float]]) -> None:
    """Box agreement with ultralytics, CPU per thread, resident memory, load, and which ratios hold."""
    from agent.tooling.evaluation.agreement import box_agreement

    names, first = [model.name for model in args.models], args.setups[0]
    pairs = [(f"{rt} agent", peer) for rt in args.runtimes for peer in ("ultralytics", "ultralytics ov")]
    pairs += [("openvino agent", "onnxruntime agent")]
    print(f"\nbox agreement, agent {setup_name(first)} (each runtime) vs the others (same class, IoU >= {MATCH_IOU}, "
          "last round, every frame):")
    for name in names:
        for a, b in pairs:
            if (name, a) not in m.boxes or (name, b) not in m.boxes:
                continue
            agree = box_agreement(m.boxes[(name, a)], m.boxes[(name, b)], MATCH_IOU)
            print(f"  {name:<27} {a} vs {b}: matched {agree['matched']}, only {a} {agree['only_a']}, only {b} "
                  f"{agree['only_b']}; IoU mean {agree['mean_iou']:.4f} min {agree['min_iou']:.4f}; "
                  f"|confidence difference| mean {agree['mean_conf_diff']:.4f} max {agree['max_conf_diff']:.4f}")
    if m.runs_on:
        print("\nwhat each OpenVINO side's float layers ran in (the compiled model's INFERENCE_PRECISION_HINT; "
              "a Q/DQ model's quantized layers run INT8):")
        for (name, label), runs_on in m.runs_on.items():
            print(f"  {name:<28} {label:<16} {runs_on}")
    print("\nthe agent's CPU time per frame by thread, ms (last round; 'native': threads Python did not start, e.g. "
          "FFmpeg's decoding threads and the runtime's pool; resolution 10 ms over the run):")
    for (name, label), by_thread in m.cpu.items():
        cells = ", ".join(f"{t} {v:.2f}" for t, v in by_thread.items())
        print(f"  {name:<28} {label:<16} total {sum(by_thread.values()):5.2f}: {cells}")
    if m.rss[1]:
        print(f"\nresident memory of the agent process ({args.runtimes[0]}), {names[-1]}, setup {setup_name(first)} "
              "(peak RSS over its life, model loading included; RSS while frames flow):")
        print(f"  one camera:   peak median {med(m.rss[1]):6.1f} MB (rounds: {fmt_rounds(m.rss[1])}), running "
              f"{med(m.rss_running[1]):6.1f} MB; must be <= 300 MB: {'yes' if med(m.rss[1]) <= 300 else 'NO'}")
    if m.rss[4]:
        print(f"  four cameras: peak {m.rss[4][0]:6.1f} MB, running {m.rss_running[4][0]:6.1f} MB "
              f"({m.fps[('4 cameras', 'agent')][0]:.1f} frames/s over all four)")
    print(f"\nload per round: {'; '.join(m.loads)}")
    for setup in args.setups:
        mine = [c for c in checks if c[0] == setup_name(setup)]
        failed = [c for c in mine if c[2] < c[3]]
        print(f"must-shows, agent {setup_name(setup)}: {len(mine) - len(failed)} of {len(mine)} ratios hold"
              + ("" if not failed else "; not: " + ", ".join(c[1] for c in failed)))
