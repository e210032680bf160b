"""The plant's defect taxonomy: raw labels (prefilter classes, VLM words) -> canonical labels and codes.

:mod:`agent.taxonomy.model` is pure (the file model, the index, :meth:`Taxonomy.map`);
:mod:`agent.config.taxonomy` reads a taxonomy file and reports its problems with field path and line
(through the config's YAML reader, :mod:`agent.config.yamlfile`).
"""

from agent.taxonomy.model import (
    SEVERITIES,
    Mapped,
    Severity,
    Taxonomy,
    TaxonomyEntry,
    TaxonomyFile,
    normalise,
)

__all__ = ["SEVERITIES", "Mapped", "Severity", "Taxonomy", "TaxonomyEntry", "TaxonomyFile", "normalise"]
