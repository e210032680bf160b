"""The taxonomy file's model and the lookup built from it. Pure logic, no I/O.

A taxonomy file lists the plant's canonical labels, each with its code, a severity and the raw words
that mean it (the prefilter's class names, the VLM's defect words and their synonyms)::

    version: 1
    labels:
      - label: SURFACE_SCRATCH
        code: D-101
        severity: low
        synonyms: [scratch, scrape, scuff, scratches]

An optional ``line:`` section says what the camera looks at, for the gateway's question to the VLM
(:mod:`agent.gateway.question`); with it, each entry's ``description`` is given to the VLM too::

    line:
      part: a machined steel surface, seen from above   # what the camera looks at
      good: an even grey surface with faint parallel machining marks
      reference_image: good-part.jpg                    # optional; relative to this file

Words are matched after :func:`normalise` (case, surrounding whitespace, and ``_``/``-``/runs of
whitespace do not matter: ``Missing_Piece`` and ``missing  piece`` are one word). A canonical label
also matches itself.

The format is flat on purpose: an entry never refers to another entry (no ``parent:`` or alias chains),
so a chain, and therefore a cycle, cannot be written. What would create one, a synonym that is another
entry's canonical label (or one of its synonyms), is rejected by :func:`conflicts` as a word that maps
to two labels, as is a canonical label or a code defined twice.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["SEVERITIES", "Conflict", "LineInfo", "Mapped", "Severity", "Taxonomy", "TaxonomyEntry", "TaxonomyFile",
           "conflicts", "normalise"]

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")

_SEPARATORS = re.compile(r"[\s_\-]+")


def normalise(word: str) -> str:
    """The form words are matched in: case-folded, ``_``, ``-`` and whitespace runs as one space, trimmed.

    ``"  Missing_Piece "`` -> ``"missing piece"``; ``"hair-line  crack"`` -> ``"hair line crack"``.
    """
    return _SEPARATORS.sub(" ", word.casefold()).strip()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _word(value: str, what: str) -> str:
    if not normalise(value):
        raise ValueError(f"{what} is empty (only spaces, '_' or '-')")
    return value.strip()


class TaxonomyEntry(_Strict):
    """One canonical label of the plant."""

    label: str = Field(description="the plant's canonical label, as its MES knows it")
    code: str = Field(description="the plant's defect code")
    severity: Severity
    synonyms: list[str] = Field(default_factory=list, description="raw words that mean this label")
    description: str | None = Field(default=None, max_length=300, description=(
        "what the defect looks like, in a sentence; the gateway gives it to the VLM"))

    @field_validator("label", "code")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        return _word(v, "the value")

    @field_validator("synonyms")
    @classmethod
    def _synonyms(cls, v: list[str]) -> list[str]:
        return [_word(word, f"synonym {word!r}") for word in v]


class LineInfo(_Strict):
    """What the line's camera looks at: the gateway's question names it, and what a good part looks like."""

    part: str = Field(min_length=1, max_length=200, description=(
        "the part or surface the camera looks at, in a few words: 'a machined steel surface'"))
    good: str | None = Field(default=None, max_length=500, description="what a good part looks like")
    reference_image: pathlib.Path | None = Field(default=None, description=(
        "a JPEG or PNG photo of a good part (relative to the taxonomy file); the gateway sends it with every "
        "question"))

    @field_validator("part", "good")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return None if v is None else _word(v, "the value")


class TaxonomyFile(_Strict):
    """The whole file."""

    version: Literal[1] = 1
    line: LineInfo | None = None
    labels: list[TaxonomyEntry] = Field(min_length=1)


Key = str | int


@dataclasses.dataclass(frozen=True)
class Conflict:
    """A problem between entries: where (a field path inside the file) and what."""

    path: tuple[Key, ...]
    message: str


def conflicts(file: TaxonomyFile) -> list[Conflict]:
    """Every word that maps to two canonical labels, and every label or code defined twice.

    Canonical labels are registered first, so a synonym that names another entry's label is reported as
    such, wherever the two entries are in the file.
    """
    found: list[Conflict] = []
    owner: dict[str, tuple[int, tuple[Key, ...]]] = {}  # normalised word -> (entry index, where defined)
    codes: dict[str, int] = {}
    for i, entry in enumerate(file.labels):
        key = normalise(entry.label)
        if key in owner:
            first = owner[key][1]
            found.append(Conflict(("labels", i, "label"), f"label {entry.label!r} is defined twice: "
                                  f"first at {_dotted(first)}; merge the two entries"))
        else:
            owner[key] = (i, ("labels", i, "label"))
        if entry.code in codes:
            found.append(Conflict(("labels", i, "code"), f"code {entry.code!r} is used twice: also by "
                                  f"labels[{codes[entry.code]}] ({file.labels[codes[entry.code]].label}); "
                                  "each canonical label needs its own code"))
        else:
            codes[entry.code] = i
    for i, entry in enumerate(file.labels):
        for j, word in enumerate(entry.synonyms):
            key = normalise(word)
            where: tuple[Key, ...] = ("labels", i, "synonyms", j)
            if key not in owner:
                owner[key] = (i, where)
                continue
            other, first = owner[key]
            if other == i:
                continue  # the same word twice in one entry (or its own label): no ambiguity
            target = file.labels[other].label
            if first[-1] == "label":
                message = (f"synonym {word!r} of {entry.label} is the canonical label {target!r} ({_dotted(first)}); "
                           "an entry cannot refer to another (no alias chains): list its words under one label")
            else:
                message = (f"synonym {word!r} of {entry.label} is already a synonym of {target} "
                           f"({_dotted(first)}); a word can map to one canonical label only")
            found.append(Conflict(where, message))
    return found


def _dotted(path: tuple[Key, ...]) -> str:
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


@dataclasses.dataclass(frozen=True)
class Mapped:
    """What a raw label maps to."""

    canonical: str
    code: str
    severity: Severity


@dataclasses.dataclass(frozen=True)
class Taxonomy:
    """The lookup: normalised word -> :class:`Mapped`. Build it with :meth:`from_file`."""

    index: Mapping[str, Mapped]
    source: str = ""
    """Where it was loaded from (for messages)."""
    entries: tuple[TaxonomyEntry, ...] = ()
    """The file's entries, in its order (labels, descriptions: what the gateway's question names)."""
    line: LineInfo | None = None
    """The file's ``line`` section (``reference_image`` made relative to the file's folder by the loader)."""

    @classmethod
    def from_file(cls, file: TaxonomyFile, source: str = "") -> Taxonomy:
        """The lookup of a validated file; ValueError listing every :func:`conflicts` when there are any."""
        problems = conflicts(file)
        if problems:
            raise ValueError("; ".join(f"{_dotted(c.path)}: {c.message}" for c in problems))
        index: dict[str, Mapped] = {}
        for entry in file.labels:
            mapped = Mapped(entry.label, entry.code, entry.severity)
            for word in (entry.label, *entry.synonyms):
                index[normalise(word)] = mapped
        return cls(index=dict(sorted(index.items())), source=source, entries=tuple(file.labels), line=file.line)

    def __hash__(self) -> int:
        return hash(tuple(self.index.items()))

    def map(self, label: str) -> Mapped | None:
        """The canonical label, code and severity of ``label``; None when the word is unmapped."""
        return self.index.get(normalise(label))

    def fields(self, label: str) -> dict[str, str | None]:
        """``{"canonical", "code", "severity"}`` for a payload; all None when ``label`` is unmapped."""
        mapped = self.map(label)
        if mapped is None:
            return {"canonical": None, "code": None, "severity": None}
        return {"canonical": mapped.canonical, "code": mapped.code, "severity": mapped.severity}
