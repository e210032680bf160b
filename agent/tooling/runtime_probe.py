"""``edge-agent models probe-runtime``: the probe ``model.runtime: auto`` runs at start-up, ahead of time.

Measures every installed CPU runtime on the model with the config's model settings (``--config``, else
``$EDGE_AGENT_CONFIG``, else the defaults), caches the result where the agent looks for it
(agent.prefilter.runtime_choice) and prints the numbers; the agent then starts without probing.
"""

from __future__ import annotations

import os
import pathlib

import typer

from agent.prefilter.runtime_choice import RuntimeChoice

__all__ = ["run_probe_runtime"]


def run_probe_runtime(model: pathlib.Path, config: pathlib.Path | None = None,
                      cache_dir: pathlib.Path | None = None) -> RuntimeChoice:
    """Probe again (a cached result is replaced) and print the choice; EdgeAgentError for a bad model."""
    from agent.config.loader import load_config
    from agent.prefilter.factory import open_prefilter
    from agent.prefilter.runtime_choice import choose_runtime

    config_path = config or (pathlib.Path(os.environ["EDGE_AGENT_CONFIG"])
                             if os.environ.get("EDGE_AGENT_CONFIG") else None)
    model_config = load_config(config_path).model
    update: dict[str, object] = {"path": model, "runtime": "auto"}
    if cache_dir is not None:
        update["engine_cache_dir"] = cache_dir
    model_config = model_config.model_copy(update=update)
    _model, choice = choose_runtime(model, model_config, open_prefilter, force=True)
    for runtime, fps in sorted(choice.frames_per_s.items(), key=lambda kv: -kv[1]):
        typer.echo(f"{runtime:12s} {fps:8.1f} frames/s")
    typer.echo(f"model.runtime auto uses: {choice.describe()}")
    return choice
