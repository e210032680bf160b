"""``edge-agent gateway-modelfile``: the Ollama Modelfile that asks the VLM about a plant's line.

Apart from :mod:`.main` so that writing it needs neither the gRPC server nor the ``ollama`` extra: the
file is made on any box, then ``ollama create`` runs on the gateway host.
"""

from __future__ import annotations

import pathlib

from agent.errors import ConfigError
from agent.gateway.config import GatewayConfig, is_model_name
from agent.gateway.question import load_inspection, modelfile_text

__all__ = ["modelfile"]


def modelfile(taxonomy: pathlib.Path | None, base: str, name: str, out: pathlib.Path | None) -> str:
    """The Modelfile for ``taxonomy``'s line (None: the conveyor and the default defect classes), written to
    ``out`` when given (whole or not at all); returns its text. Raises ConfigError naming a bad input."""
    problems = [f"--{flag} {value!r} is not an Ollama model name; expected NAME[:TAG], e.g. llava:7b"
                for flag, value in (("from", base), ("name", name)) if not is_model_name(value)]
    if problems:
        raise ConfigError(problems, "command line")
    config = GatewayConfig(taxonomy=taxonomy.resolve() if taxonomy is not None else None)
    inspection = load_inspection(config, source="--taxonomy")
    text = modelfile_text(inspection, base=base, name=name, source=str(taxonomy) if taxonomy is not None else "")
    if out is not None:
        partial = out.with_name(f".{out.name}.partial")
        try:
            partial.write_text(text, encoding="utf-8")
            partial.replace(out)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ConfigError([f"--out {out}: cannot be written ({exc.strerror or exc})"], "command line") from exc
    return text
