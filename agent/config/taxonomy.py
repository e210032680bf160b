"""Read a taxonomy file into a :class:`~agent.taxonomy.model.Taxonomy`, or say everything wrong with it.

Problems are reported like the agent's config: ``FIELD (line N): MESSAGE`` (unknown keys, wrong
types, duplicate keys, YAML syntax with line and column), plus the conflicts between entries of
:func:`agent.taxonomy.model.conflicts`, in one :class:`~agent.errors.ConfigError` whose ``source`` is the file.
"""

from __future__ import annotations

import pathlib

from pydantic import ValidationError

from agent.config.yamlfile import describe, dotted, read_file, where
from agent.errors import ConfigError
from agent.taxonomy.model import Taxonomy, TaxonomyFile, conflicts

__all__ = ["load_taxonomy"]


def load_taxonomy(path: pathlib.Path | str) -> Taxonomy:
    """The taxonomy in ``path``; ConfigError listing every problem (each with its field path and line)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: no such taxonomy file" if not path.exists() else f"{path}: not a file"],
                          str(path))
    data, lines, problems = read_file(path, TaxonomyFile, ())
    try:
        file = TaxonomyFile.model_validate(data)
    except ValidationError as exc:
        problems += [describe(error, lines, {}, TaxonomyFile) for error in exc.errors(include_url=False)]
        raise ConfigError(problems, str(path)) from exc
    for conflict in conflicts(file):
        place = where(conflict.path, lines, {})
        problems.append(f"{dotted(conflict.path)}{f' ({place})' if place else ''}: {conflict.message}")
    if problems:
        raise ConfigError(problems, str(path))
    if file.line is not None and file.line.reference_image is not None:
        image = path.parent / file.line.reference_image  # an absolute path stays as it is
        file = file.model_copy(update={"line": file.line.model_copy(update={"reference_image": image})})
    return Taxonomy.from_file(file, source=str(path))
