"""The taxonomy: normalisation, mapping, unmapped words, and the file's problems with their lines."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from agent.config.taxonomy import load_taxonomy
from agent.errors import ConfigError
from agent.taxonomy import Mapped, Taxonomy, TaxonomyFile, normalise

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "systemd" / "taxonomy.example.yaml"

SMALL = """\
version: 1
labels:
  - label: SURFACE_SCRATCH
    code: D-101
    severity: low
    synonyms: [scratch, scuff]
  - label: MISSING_PART
    code: D-301
    severity: critical
    synonyms: [missing, Missing piece]
"""


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "taxonomy.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: pathlib.Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_taxonomy(path)
    assert info.value.source == str(path)
    return info.value.problems


@pytest.mark.parametrize(
    ("word", "normal"),
    [
        ("scratch", "scratch"),  # already normal
        ("  Scratch\t", "scratch"),  # case and surrounding whitespace
        ("Missing_Piece", "missing piece"),  # underscore
        ("missing-piece", "missing piece"),  # hyphen
        ("missing \t  piece", "missing piece"),  # a run of whitespace
        ("hair-_ line", "hair line"),  # a mixed run is one separator
        ("ÉCLAT", "éclat"),  # case-folded beyond ASCII
    ],
)
def test_normalise(word: str, normal: str) -> None:
    assert normalise(word) == normal


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("scratch", Mapped("SURFACE_SCRATCH", "D-101", "low")),  # a synonym
        ("SCUFF", Mapped("SURFACE_SCRATCH", "D-101", "low")),  # case does not matter
        ("surface scratch", Mapped("SURFACE_SCRATCH", "D-101", "low")),  # the label matches itself
        ("missing_piece", Mapped("MISSING_PART", "D-301", "critical")),  # '_' = ' '
        ("Missing-Piece ", Mapped("MISSING_PART", "D-301", "critical")),  # '-' = ' ', trailing space
        ("dent", None),  # not listed: unmapped
        ("", None),  # nothing: unmapped
    ],
)
def test_map(tmp_path: pathlib.Path, label: str, expected: Mapped | None) -> None:
    taxonomy = load_taxonomy(write(tmp_path, SMALL))
    assert taxonomy.map(label) == expected


def test_fields_for_a_payload(tmp_path: pathlib.Path) -> None:
    taxonomy = load_taxonomy(write(tmp_path, SMALL))
    assert taxonomy.fields("scuff") == {"canonical": "SURFACE_SCRATCH", "code": "D-101", "severity": "low"}
    assert taxonomy.fields("blob") == {"canonical": None, "code": None, "severity": None}


def test_the_shipped_example_maps_the_shipped_classes_and_common_vlm_words() -> None:
    taxonomy = load_taxonomy(EXAMPLE)
    for word in ("scratch", "hole", "stain", "missing",  # the shipped prefilter's classes
                 "dent", "crack", "chip", "rust", "smudge", "missing piece", "puncture"):
        assert taxonomy.map(word) is not None, word
    assert taxonomy.map("metal part") is None  # a VLM word that is no defect stays unmapped


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the same synonym under two canonical labels: both places named
        ("""\
         labels:
           - {label: DENT, code: D-1, severity: low, synonyms: [dent, ding]}
           - {label: DEFORMATION, code: D-2, severity: medium,
              synonyms: [bend, Ding]}
         """,
         "labels[1].synonyms[1] (line 4): synonym 'Ding' of DEFORMATION is already a synonym of DENT "
         "(labels[0].synonyms[1]); a word can map to one canonical label only"),
        # a synonym that is another entry's canonical label (would be an alias chain): rejected
        ("""\
         labels:
           - label: CRACK
             code: D-1
             severity: high
             synonyms: [crack, chip]
           - label: CHIP
             code: D-2
             severity: medium
             synonyms: [chipped]
         """,
         "labels[0].synonyms[1] (line 5): synonym 'chip' of CRACK is the canonical label 'CHIP' (labels[1].label); "
         "an entry cannot refer to another (no alias chains): list its words under one label"),
        # a self-reference is harmless: the label listed as its own synonym
        # (no problem; tested below) -- here the same canonical label twice, spelt differently
        ("""\
         labels:
           - {label: MISSING_PART, code: D-1, severity: high}
           - {label: missing part, code: D-2, severity: high}
         """,
         "labels[1].label (line 3): label 'missing part' is defined twice: first at labels[0].label; "
         "merge the two entries"),
        # two labels with one code
        ("""\
         labels:
           - {label: HOLE, code: D-9, severity: high}
           - {label: CRACK, code: D-9, severity: high}
         """,
         "labels[1].code (line 3): code 'D-9' is used twice: also by labels[0] (HOLE); "
         "each canonical label needs its own code"),
    ],
)
def test_conflicts_between_entries(tmp_path: pathlib.Path, text: str, expected: str) -> None:
    assert problems(write(tmp_path, text)) == [expected]


def test_a_label_listing_itself_or_a_word_twice_is_fine(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, """\
        labels:
          - {label: HOLE, code: D-1, severity: high, synonyms: [hole, Hole, HOLE_]}
        """)
    assert load_taxonomy(path).map("hole") == Mapped("HOLE", "D-1", "high")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an unknown key, rejected like in the agent's config
        ("labels:\n  - {label: HOLE, code: D-1, severity: high, synonym: [hole]}\n",
         "labels[0].synonym (line 2): unknown key; expected one of: label, code, severity, synonyms, description"),
        # a severity the format does not know
        ("labels:\n  - label: HOLE\n    code: D-1\n    severity: severe\n",
         "labels[0].severity (line 4): Input should be 'low', 'medium', 'high' or 'critical' (got 'severe')"),
        # a missing code
        ("labels:\n  - label: HOLE\n    severity: high\n", "labels[0].code (line 2): Field required"),
        # an empty synonym
        ("labels:\n  - {label: HOLE, code: D-1, severity: high, synonyms: [' - ']}\n",
         "labels[0].synonyms (line 2): synonym ' - ' is empty (only spaces, '_' or '-')"),
        # no labels at all
        ("version: 1\nlabels: []\n", "labels (line 2): List should have at least 1 item after validation, not 0"),
        # a version this agent does not read
        ("version: 2\nlabels:\n  - {label: HOLE, code: D-1, severity: high}\n",
         "version (line 1): Input should be 1 (got 2)"),
        # a key given twice
        ("labels:\n  - {label: HOLE, code: D-1, severity: high}\n"
         "labels:\n  - {label: DENT, code: D-2, severity: low}\n",
         "labels (line 3): duplicate key, first at line 1"),
    ],
)
def test_bad_files_name_the_field_and_line(tmp_path: pathlib.Path, text: str, expected: str) -> None:
    assert expected in problems(write(tmp_path, text))


def test_bad_yaml_has_line_and_column(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "labels:\n  - label: HOLE\n    code: [D-1\n    severity: high\n")
    (problem,) = problems(path)
    assert problem.startswith("line 4, column ") or problem.startswith("line 5, column "), problem


def test_top_level_must_be_a_mapping(tmp_path: pathlib.Path) -> None:
    assert problems(write(tmp_path, "- hole\n- dent\n")) == [
        "top level (line 1): expected a mapping of settings (version, line, labels), got a list"]


def test_a_missing_file_is_named(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nope.yaml"
    assert problems(path) == [f"{path}: no such taxonomy file"]


def test_from_file_refuses_conflicts_without_a_file() -> None:
    file = TaxonomyFile.model_validate({"labels": [
        {"label": "A", "code": "1", "severity": "low", "synonyms": ["x"]},
        {"label": "B", "code": "2", "severity": "low", "synonyms": ["X"]}]})
    with pytest.raises(ValueError, match=r"labels\[1\]\.synonyms\[0\]: synonym 'X' of B is already a synonym of A"):
        Taxonomy.from_file(file)
