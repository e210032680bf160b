"""``python -m tests.fakes.ollama``: the fake Ollama as a process, for benchmarks and for trying
``edge-agent gateway`` by hand where there is no Ollama."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tests.fakes.ollama import FakeOllama
from tests.fakes.vlm_oracle import TruthOracle

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.fakes.ollama [--port N] [--delay S] [--parallel N] [--model NAME ...] [--stop-on-eof]
    [--truth-scene SCENE --truth-seed N ... [--truth-frames N] [--error-rate R] [--error-seed N]]``:
    serve until SIGTERM/SIGINT (or, with --stop-on-eof, until stdin closes); prints ``listening on URL`` on
    stdout. For benchmarks, and for trying ``edge-agent gateway`` by hand where there is no Ollama. With
    ``--truth-scene`` it is a simulated VLM that answers from the ground truth of the frames of
    ``synthetic://SCENE?seed=N`` (wrong on ``--error-rate`` of them, decided by a hash of ``--error-seed`` and
    the frame: ``tests.fakes.vlm_oracle``); otherwise every answer is the same valid one."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.ollama", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each chat answer")
    parser.add_argument("--parallel", type=int, default=1, help="chat requests served at once")
    parser.add_argument("--model", action="append", help="a pulled model (repeat; default llava:7b)")
    parser.add_argument("--stop-on-eof", action="store_true", help="also stop when stdin closes")
    parser.add_argument("--truth-scene", help="answer from the ground truth of this synthetic scene's frames")
    parser.add_argument("--truth-seed", type=int, action="append", help="a seed of the camera (repeat)")
    parser.add_argument("--truth-frames", type=int, default=2000, help="frames of each seed it knows")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of frames answered wrong (0..1)")
    parser.add_argument("--error-seed", type=int, default=0, help="seed of the wrong answers")
    args = parser.parse_args(argv)
    oracle = None
    if args.truth_scene is not None:
        if not args.truth_seed or args.truth_frames < 1 or not 0.0 <= args.error_rate <= 1.0:
            parser.error("--truth-scene needs --truth-seed (repeat for several cameras), --truth-frames of at least "
                         "1 and an --error-rate in 0..1")
        oracle = TruthOracle.from_scene(args.truth_scene, args.truth_seed, args.truth_frames, args.error_rate,
                                        args.error_seed)
    elif args.truth_seed or args.error_rate:
        parser.error("--truth-seed and --error-rate need --truth-scene (the scene whose truth is answered)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeOllama(models=args.model or ["llava:7b"], delay_s=args.delay, parallel=args.parallel,
                    port=args.port, answer_fn=oracle) as fake:
        print(f"listening on {fake.url}", flush=True)
        if args.stop_on_eof:
            def stop_on_eof() -> None:
                sys.stdin.read()
                stop.set()
            threading.Thread(target=stop_on_eof, daemon=True).start()
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
