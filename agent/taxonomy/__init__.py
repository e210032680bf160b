"""The plant's defect taxonomy: raw labels (prefilter classes, VLM words) -> canonical labels and codes.

:mod:`agent.taxonomy.model` is pure (the file model, the index, :meth:`Taxonomy.map`);
:mod:`agent.taxonomy.loading` reads a taxonomy file and reports its problems with field path and line.
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
