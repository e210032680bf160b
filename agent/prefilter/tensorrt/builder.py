"""Build a TensorRT plan from an ONNX graph, with progress. Needs a GPU and the ``tensorrt`` module.

Explicit quantization only: INT8 comes from the graph's Q/DQ nodes (no calibrator; TensorRT
11 removed them). TensorRT 10 (weak typing) still needs ``BuilderFlag.INT8`` for a Q/DQ graph
and ``BuilderFlag.FP16`` to run the other layers in FP16; TensorRT 11 has no precision flags
and always types strongly: there the precision is the graph's own (a Q/DQ graph runs INT8,
a float graph its float type), so FP16 from an FP32 graph is refused with what to do.

Progress: TensorRT's ``IProgressMonitor`` (8.6 and later) feeds :class:`PhaseTracker`, which
turns phases and steps into a few lines (a phase's start, its steps at most every few
seconds, its end with the elapsed time); a :class:`Heartbeat` says "still building" with the
elapsed time in case TensorRT goes quiet (some phases have no steps for minutes on a Jetson).
"""

from __future__ import annotations

import dataclasses
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.errors import ModelError
from agent.prefilter.providers import Precision
from agent.prefilter.tensorrt.engine_key import BatchProfile

__all__ = ["BuildRequest", "Heartbeat", "PhaseTracker", "build_plan"]

Report = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    onnx: bytes  # the graph to build (batch dimension already freed when batch.max > 1)
    model_name: str
    precision: Precision
    batch: BatchProfile
    input_name: str
    chw: tuple[int, int, int]
    timing_cache: pathlib.Path | None  # read before and written after the build (makes rebuilds faster)
    device_id: int = 0
    workspace_bytes: int = 1 << 30  # modest: a Jetson shares its memory with the CPU


class PhaseTracker:
    """TensorRT's build phases as progress lines. Pure: ``clock`` is injectable for tests."""

    def __init__(self, report: Report, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.report, self.every_s, self.clock = report, every_s, clock
        self._phases: dict[str, tuple[float, int, int]] = {}  # name -> (start, steps, depth)
        self._last: dict[str, float] = {}
        self.cancelled = False

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        depth = self._phases[parent][2] + 1 if parent in self._phases else 0
        now = self.clock()
        self._phases[name] = (now, int(steps), depth)
        self._last[name] = now
        self.report(f"{'  ' * depth}{name}: started ({steps} step{'s' if steps != 1 else ''})")

    def step_complete(self, name: str, step: int) -> bool:
        """Returns False to cancel the build (after :meth:`cancel`)."""
        if name in self._phases:
            start, steps, depth = self._phases[name]
            now = self.clock()
            if now - self._last.get(name, start) >= self.every_s:
                self._last[name] = now
                self.report(f"{'  ' * depth}{name}: {min(step + 1, steps)}/{steps} ({now - start:.0f} s)")
        return not self.cancelled

    def phase_finish(self, name: str) -> None:
        start, _steps, depth = self._phases.pop(name, (self.clock(), 0, 0))
        self._last.pop(name, None)
        self.report(f"{'  ' * depth}{name}: done in {self.clock() - start:.1f} s")

    def cancel(self) -> None:
        self.cancelled = True


class Heartbeat:
    """While the ``with`` block runs: ``"<what>: still running, N s"`` every ``every_s`` seconds."""

    def __init__(self, report: Report, what: str, every_s: float = 30.0) -> None:
        self.report, self.what, self.every_s = report, what, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trt-build-heartbeat", daemon=True)
        self._t0 = 0.0

    def __enter__(self) -> Heartbeat:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.report(f"{self.what}: still running, {time.monotonic() - self._t0:.0f} s")


def _monitor(trt: Any, tracker: PhaseTracker) -> Any:
    """A ``trt.IProgressMonitor`` forwarding to ``tracker`` (None where this TensorRT has none)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__()  # pybind11 trampolines need the base initialised explicitly

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            tracker.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return tracker.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            tracker.phase_finish(phase_name)

    return _Monitor()


def tensorrt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def build_plan(request: BuildRequest, report: Report) -> bytes:
    """Parse, configure and build; returns the serialized plan. ModelError with TensorRT's own words on failure."""
    from agent.prefilter.tensorrt.platform import load_tensorrt

    trt = load_tensorrt()
    major = tensorrt_major(trt.__version__)
    weak_flags = hasattr(trt.BuilderFlag, "INT8") and major < 11
    if not weak_flags and request.precision.fp16 and not request.precision.int8:
        raise ModelError(f"TensorRT {trt.__version__} has no FP16 builder flag (strong typing): FP16 must be in the "
                         f"graph; build {request.model_name} from an FP16 ONNX export (ultralytics `half`/"
                         "`quantize=fp16`), or use precision fp32, or the INT8 Q/DQ model")
    if not weak_flags and request.precision.fp16:
        report(f"TensorRT {trt.__version__} types strongly: the layers outside the Q/DQ nodes run in the graph's own "
               "float type (no FP16 flag)")
    logger = trt.Logger(trt.Logger.WARNING)
    t_all = time.monotonic()
    report(f"TensorRT {trt.__version__}: parsing {request.model_name} ({len(request.onnx) / 1e6:.1f} MB)")
    builder = trt.Builder(logger)
    flags = 0
    if not weak_flags and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(request.onnx):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"TensorRT could not parse {request.model_name}: " + "; ".join(errors[:5])
                         + ("" if errors else "no reason given"))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_bytes)
    if weak_flags:
        if request.precision.int8:
            config.set_flag(trt.BuilderFlag.INT8)  # scales from the Q/DQ nodes: explicit quantization
        if request.precision.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    c, h, w = request.chw
    b = request.batch
    profile.set_shape(request.input_name, (b.min, c, h, w), (b.opt, c, h, w), (b.max, c, h, w))
    config.add_optimization_profile(profile)
    timing = _load_timing_cache(config, request.timing_cache, report)
    tracker = PhaseTracker(report)
    monitor = _monitor(trt, tracker)
    if monitor is not None:
        config.progress_monitor = monitor
    report(f"building the {request.precision.name} engine, batch {b} (minutes on a Jetson)")
    t0 = time.monotonic()
    with Heartbeat(report, "TensorRT build", every_s=30.0 if monitor is not None else 15.0):
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"TensorRT did not build an engine for {request.model_name} (its log above says why; "
                         "common causes: GPU memory, an operator TensorRT lacks)")
    report(f"engine built in {time.monotonic() - t0:.1f} s ({time.monotonic() - t_all:.1f} s in all)")
    if timing is not None and request.timing_cache is not None:
        _save_timing_cache(config, request.timing_cache, report)
    return bytes(memoryview(plan))


def _load_timing_cache(config: Any, path: pathlib.Path | None, report: Report) -> Any:
    if path is None or not hasattr(config, "create_timing_cache"):
        return None
    previous = b""
    try:
        previous = path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        report(f"timing cache {path} not readable ({exc}); starting a new one")
    cache = config.create_timing_cache(previous)
    if cache is None and previous:
        report(f"timing cache {path} was not accepted by this TensorRT; starting a new one")
        cache = config.create_timing_cache(b"")
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False) is False:
        report(f"timing cache {path} is for another GPU or TensorRT; starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _save_timing_cache(config: Any, path: pathlib.Path, report: Report) -> None:
    from agent.prefilter.tensorrt.engine_cache import write_atomic

    try:
        data = bytes(memoryview(config.get_timing_cache().serialize()))
        write_atomic(path, data)
    except (OSError, AttributeError) as exc:
        report(f"timing cache not saved to {path}: {exc}")
