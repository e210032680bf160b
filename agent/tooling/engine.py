"""``edge-agent models build-engine``: build (or find) the TensorRT plan the agent will use for a model.

The same steps as ``model.runtime: tensorrt`` at load (agent.prefilter.tensorrt.engine), run ahead
of time with the progress on stderr: on a Jetson a build takes minutes, better spent at
provisioning than at the first start. Defaults come from the config (``--config``, else
``$EDGE_AGENT_CONFIG``, else the built-in defaults): precision, batch profile (1:N:N for a detector
with ``model.max_batch`` N), cache directory and GPU, so the plan built here is the one the agent
finds. The plan is loaded once after the build and run on a blank input, so a plan that does not
run is reported here, not at the agent's start.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import time
from typing import Any

import numpy as np
import typer

from agent.errors import EdgeAgentError
from agent.prefilter.providers import PRECISIONS, engine_cache_root

__all__ = ["BuildEngineOptions", "run_build_engine"]


@dataclasses.dataclass(frozen=True)
class BuildEngineOptions:
    model: pathlib.Path
    precision: str | None = None  # None: model.precision of the config
    batch: str | None = None  # MIN:OPT:MAX; None: the agent's profile for model.max_batch
    cache_dir: pathlib.Path | None = None  # None: model.engine_cache_dir, else the state directory
    config: pathlib.Path | None = None
    device: int | None = None
    force: bool = False


def _say(line: str) -> None:
    typer.echo(line, err=True)


def run_build_engine(opts: BuildEngineOptions) -> pathlib.Path:
    """Returns the plan's path; EdgeAgentError (exit 2) for anything wrong, with what to do."""
    from agent.config.loader import load_config
    from agent.prefilter.model_info import load_metadata
    from agent.prefilter.tensorrt.builder import build_plan
    from agent.prefilter.tensorrt.engine import default_batch, load_engine, prepare_model, read_model
    from agent.prefilter.tensorrt.engine_key import BatchProfile
    from agent.prefilter.tensorrt.platform import probe_platform

    config_path = opts.config or (pathlib.Path(os.environ["EDGE_AGENT_CONFIG"])
                                  if os.environ.get("EDGE_AGENT_CONFIG") else None)
    model_config = load_config(config_path).model  # no file: the defaults (and EDGE_AGENT_* overrides)
    precision = opts.precision or model_config.precision
    if precision not in PRECISIONS:
        raise EdgeAgentError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    proto, meta = read_model(opts.model)
    parsed, _source = load_metadata(opts.model, meta)
    if opts.batch is not None:
        try:
            batch = BatchProfile.parse(opts.batch)
        except ValueError as exc:
            raise EdgeAgentError(f"--batch: {exc}") from None
    else:
        batch = default_batch(parsed["task"], model_config.max_batch)
    prepared = prepare_model(opts.model, proto, precision, batch)
    del proto
    device = opts.device if opts.device is not None else model_config.gpu_device
    cache_dir = opts.cache_dir or engine_cache_root(model_config.engine_cache_dir, os.environ)
    platform = probe_platform(device)
    _say(f"{opts.model.name}: {parsed['task']}, {prepared.precision.name}, batch {batch}, on {platform.gpu_name} "
         f"(sm {platform.compute_capability}), TensorRT {platform.tensorrt_version}; cache {cache_dir}")
    session, entry, built = load_engine(prepared, cache_dir, platform, build_plan, _say, force=opts.force)
    _check_plan(session, prepared.chw, batch)
    typer.echo(f"{'built' if built else 'cached'}: {entry.plan}")
    return entry.plan


def _check_plan(session: Any, chw: tuple[int, int, int], batch: object) -> None:
    """One blank batch of 1 through the plan (the first run allocates), then ten timed."""
    try:
        spec = session.get_inputs()[0]
        x = np.zeros((1, *chw), np.float32)
        session.run(None, {spec.name: x})  # first run allocates
        t0 = time.perf_counter()
        for _ in range(10):
            session.run(None, {spec.name: x})
        ms = (time.perf_counter() - t0) * 100.0
        _say(f"plan loads and runs: {ms:.2f} ms per batch of 1 (copies included), up to {session.max_batch} "
             f"a call (profile {batch})")
    finally:
        session.close()


def main_build_engine(opts: BuildEngineOptions) -> None:
    """The command's body for agent.cli.main: Ctrl-C says that nothing was cached and exits 130."""
    try:
        run_build_engine(opts)
    except KeyboardInterrupt:
        typer.echo("edge-agent: build-engine interrupted; nothing was written to the cache", err=True)
        sys.exit(130)
