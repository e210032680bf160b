"""``python -m tests.fakes.ollama``: the fake Ollama as a process, for benchmarks and for trying
``edge-agent gateway`` by hand where there is no Ollama."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tests.fakes.ollama import FakeOllama

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.fakes.ollama [--port N] [--delay S] [--parallel N] [--model NAME ...] [--stop-on-eof]``:
    serve until SIGTERM/SIGINT (or, with --stop-on-eof, until stdin closes); prints ``listening on URL`` on
    stdout. For benchmarks, and for trying ``edge-agent gateway`` by hand where there is no Ollama."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.ollama", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each chat answer")
    parser.add_argument("--parallel", type=int, default=1, help="chat requests served at once")
    parser.add_argument("--model", action="append", help="a pulled model (repeat; default llava:7b)")
    parser.add_argument("--stop-on-eof", action="store_true", help="also stop when stdin closes")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeOllama(models=args.model or ["llava:7b"], delay_s=args.delay, parallel=args.parallel,
                    port=args.port) as fake:
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
