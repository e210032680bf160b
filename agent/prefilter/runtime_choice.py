"""``model.runtime: auto``: the fastest runtime installed for this model on this box, by a short measured probe.

Installed runtimes: ONNX Runtime always, OpenVINO with the ``openvino`` extra. With only
one there is nothing to measure: it is used (one log line says so and how to add
OpenVINO). With both, :func:`probe` opens the model on each and runs the same frame on
each for a few alternating rounds (about a quarter of a second a round, the model's own
concurrent runs), taking each side's median frames per second; the faster one is used.
The result is kept as JSON in ``runtime-choice/`` under the engine cache directory, keyed
(like the TensorRT plans) by what the result depends on: the model file's SHA-256, the
CPU's model and instruction-set flags, both runtime versions and the thread, batch,
provider and precision settings. A key that changes (a new model, another CPU, an
upgrade) means a new probe. ``edge-agent models probe-runtime`` runs it ahead of time;
``edge-agent doctor`` shows the choice and the numbers it rests on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.config.models import ModelConfig
from agent.errors import ModelError
from agent.prefilter.openvino_session import INSTALL_HINT, openvino_version
from agent.prefilter.providers import engine_cache_root, ensure_writable_dir

__all__ = ["RuntimeChoice", "choose_runtime", "installed_runtimes", "probe_key", "read_choice"]

log = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "openvino")
ROUND_S = 0.25
ROUNDS = 3

Opener = Callable[[pathlib.Path, ModelConfig], Any]


@dataclasses.dataclass(frozen=True)
class RuntimeChoice:
    runtime: str
    how: str  # "probed now" | "probe cached" | "only one installed"
    frames_per_s: dict[str, float]  # median per runtime (empty without a probe)
    load_average: float | None  # the 1-minute load when probed
    record: pathlib.Path | None  # the cached probe

    def describe(self) -> str:
        if not self.frames_per_s and self.how == "only one installed":
            return f"{self.runtime} ({self.how}: {INSTALL_HINT} adds OpenVINO; nothing to measure)"
        if not self.frames_per_s:
            return f"{self.runtime} ({self.how}; nothing to measure)"
        rates = ", ".join(f"{rt} {fps:.1f} frames/s" for rt, fps in sorted(self.frames_per_s.items(),
                                                                          key=lambda kv: -kv[1]))
        load = f", load {self.load_average:.1f}" if self.load_average is not None else ""
        return f"{self.runtime} ({self.how}: {rates}{load}; {self.record})"


def installed_runtimes() -> list[str]:
    """The CPU runtimes this environment has (ONNX Runtime is a dependency; OpenVINO an extra)."""
    return ["onnxruntime", "openvino"] if openvino_version() is not None else ["onnxruntime"]


def _cpu_identity() -> tuple[str, str]:
    """(CPU model name, SHA-256 of its flags) from /proc/cpuinfo; the platform's words elsewhere."""
    import platform

    name, flags = platform.processor() or platform.machine(), ""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and value.strip():
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = " ".join(sorted(value.split()))
    return name, hashlib.sha256(flags.encode()).hexdigest()[:16]


def probe_key(path: pathlib.Path, config: ModelConfig) -> dict[str, Any]:
    """What a probe's result depends on."""
    import onnxruntime as ort

    from agent.prefilter.model_info import file_digest

    cpu, flags = _cpu_identity()
    return {"model_sha256": file_digest(path), "cpu": cpu, "cpu_flags_sha256": flags,
            "onnxruntime": ort.__version__, "openvino": openvino_version(),
            "intra_op_threads": config.intra_op_threads, "concurrent_runs": config.concurrent_runs,
            "max_batch": config.max_batch, "providers": list(config.providers), "precision": config.precision}


def _record_path(path: pathlib.Path, config: ModelConfig, key: dict[str, Any]) -> pathlib.Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = engine_cache_root(config.engine_cache_dir, os.environ) / "runtime-choice"
    return root / f"{path.stem}-{digest}.json"


def read_choice(path: pathlib.Path, config: ModelConfig) -> RuntimeChoice | None:
    """The cached probe for this model and settings, or None (none yet, unreadable, or for another key)."""
    key = probe_key(path, config)
    record = _record_path(path, config, key)
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or data.get("runtime") not in RUNTIMES:
        return None
    rates = {str(k): float(v) for k, v in dict(data.get("frames_per_s", {})).items()}
    load = data.get("load_average")
    return RuntimeChoice(str(data["runtime"]), "probe cached", rates, float(load) if load is not None else None,
                         record)


def _with_runtime(config: ModelConfig, runtime: str) -> ModelConfig:
    return config.model_copy(update={"runtime": runtime})


def choose_runtime(path: pathlib.Path, config: ModelConfig, opener: Opener, *, force: bool = False) \
        -> tuple[Any, RuntimeChoice]:
    """The model opened with the runtime ``auto`` picks, and the choice. ``opener`` opens it with a given runtime
    (``agent.prefilter.factory.open_prefilter``); ``force`` probes again even when a result is cached."""
    path = pathlib.Path(path)
    installed = installed_runtimes()
    if len(installed) == 1:
        choice = RuntimeChoice(installed[0], "only one installed", {}, None, None)
        log.info("model.runtime auto: only %s is installed, so it is used without a probe (%s adds OpenVINO)",
                 installed[0], INSTALL_HINT)
        return opener(path, _with_runtime(config, installed[0])), choice
    cached = None if force else read_choice(path, config)
    if cached is not None:
        log.info("model.runtime auto: %s", cached.describe())
        return opener(path, _with_runtime(config, cached.runtime)), cached
    models, refused = _open_each(path, config, installed, opener)
    if len(models) == 1:  # the other runtime cannot run this model: nothing to measure, nothing cached
        only = next(iter(models))
        log.warning("model.runtime auto: %s cannot run %s (%s); using %s without a probe", refused[0], path.name,
                    refused[1], only)
        return models[only], RuntimeChoice(only, f"the only runtime that runs it ({refused[0]}: {refused[1]})",
                                           {}, None, None)
    rates = measure(models)
    best = max(rates, key=lambda rt: rates[rt])
    key = probe_key(path, config)
    record = _record_path(path, config, key)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    ensure_writable_dir(record.parent, "runtime choice directory")
    tmp = record.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"runtime": best, "frames_per_s": rates, "load_average": load, "key": key,
                               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
    tmp.replace(record)
    choice = RuntimeChoice(best, "probed now", rates, load, record)
    log.info("model.runtime auto: %s", choice.describe())
    return models[best], choice


def _open_each(path: pathlib.Path, config: ModelConfig, installed: list[str], opener: Opener) \
        -> tuple[dict[str, Any], tuple[str, str]]:
    """The model opened on every installed runtime; where one refuses it, the others and (runtime, why). The
    ModelError of the last runtime is raised when none opens it."""
    models: dict[str, Any] = {}
    refused = ("", "")
    for rt in installed:
        try:
            models[rt] = opener(path, _with_runtime(config, rt))
        except ModelError as exc:
            if rt == installed[-1] and not models:
                raise
            refused = (rt, str(exc))
    return models, refused


def measure(models: dict[str, Any], round_s: float = ROUND_S, rounds: int = ROUNDS) -> dict[str, float]:
    """Median frames per second of each model over ``rounds`` alternating rounds on the same frame, each with
    the model's own concurrent runs (one for a classifier)."""
    first = next(iter(models.values()))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (int(first.info.input_h), int(first.info.input_w), 3), dtype=np.uint8)
    per: dict[str, list[float]] = {rt: [] for rt in models}
    order = list(models)
    for r in range(rounds):
        for rt in order if r % 2 == 0 else order[::-1]:
            per[rt].append(_rate(models[rt], frame, round_s))
    return {rt: round(statistics.median(v), 1) for rt, v in per.items()}


def _rate(model: Any, frame: np.ndarray, seconds: float) -> float:
    """Frames per second of ``model.forward`` on ``frame``'s tensor from its concurrent runs' threads."""
    runs = max(1, int(getattr(model, "concurrent_runs", 1)))
    tensor = np.array(model.preprocess(frame)[0], copy=True)
    model.forward(tensor)  # the first call allocates
    counts = [0] * runs
    errors: list[BaseException] = []
    deadline = time.perf_counter() + seconds

    def work(i: int) -> None:
        mine = tensor.copy()
        try:
            while time.perf_counter() < deadline:
                model.forward(mine)
                counts[i] += 1
        except Exception as exc:  # noqa: BLE001 - handed to the caller below, with the runtime named
            errors.append(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,), name=f"runtime-probe-{i}") for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise ModelError(f"the runtime probe failed on {model.session.get_providers()}: {errors[0]}")
    return sum(counts) * len(tensor) / max(1e-9, time.perf_counter() - t0)
