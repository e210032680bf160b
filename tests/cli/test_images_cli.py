"""``edge-agent images``: list, export (folder and tar) and purge a real images folder, filtered by time, camera,
verdict and event id; bad input (a bad time, an empty range, an unknown camera, a target that exists) is refused
with a message naming the option."""

from __future__ import annotations

import csv
import datetime
import json
import pathlib
import tarfile

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.config.images import ImagesConfig
from agent.outputs.images.keeper import ImageKeeper
from agent.outputs.images.store import ImageStore
from tests.outputs.images.helpers import inspection

T0 = datetime.datetime(2025, 12, 5, 10, 0, tzinfo=datetime.timezone.utc)
# (camera, verdict, minutes after T0)
KEPT = [("cam1", "defect", 0), ("cam1", "uncertain", 10), ("cam2", "defect", 20), ("cam1", "pass", 30),
        ("cam2", "defect", 40)]


@pytest.fixture
def folder(tmp_path: pathlib.Path) -> pathlib.Path:
    """Five images of two cameras, kept by the agent's own keeper (written on this thread)."""
    root = tmp_path / "images"
    keeper = ImageKeeper(ImagesConfig(enabled=True, min_free_bytes=0, verdicts=["pass", "defect", "uncertain"]),
                         ImageStore.open(root))
    for i, (cam, verdict, minutes) in enumerate(KEPT):
        keeper.keep(inspection(cam, verdict, sequence=i, at=T0 + datetime.timedelta(minutes=minutes)))
    keeper.start()
    keeper.stop()
    return root


def invoke(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["images", *args], input=input)
    return result.exit_code, result.stdout, result.stderr


def _events(folder: pathlib.Path, *filters: str) -> list[dict[str, object]]:
    code, out, err = invoke("list", "--dir", str(folder), "--json", *filters)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize(("filters", "expected"), [
    ((), [0, 10, 20, 30, 40]),  # everything, oldest first
    (("--camera", "cam2"), [20, 40]),
    (("--verdict", "defect", "--verdict", "uncertain"), [0, 10, 20, 40]),
    (("--since", "2025-12-05T10:10:00Z", "--until", "2025-12-05T10:30"), [10, 20]),  # since in, until out
    (("--camera", "cam1", "--verdict", "pass"), [30]),
])
def test_list_filters(folder: pathlib.Path, filters: tuple[str, ...], expected: list[int]) -> None:
    rows = _events(folder, *filters)
    minutes = [round((datetime.datetime.fromisoformat(str(r["captured_at"]).replace("Z", "+00:00")) - T0)
                     .total_seconds() / 60) for r in rows]
    assert minutes == expected
    assert all(pathlib.Path(str(r["file"])).is_file() for r in rows)


def test_list_by_event_id_and_as_a_table(folder: pathlib.Path) -> None:
    event_id = str(_events(folder)[2]["event_id"])
    assert [r["event_id"] for r in _events(folder, "--event", event_id)] == [event_id]
    code, out, err = invoke("list", "--dir", str(folder), "--verdict", "uncertain")
    assert code == 0 and "cam1" in out and "uncertain" in out and len(out.splitlines()) == 1
    assert "1 image(s)" in err


def test_export_to_a_folder_has_the_jpegs_and_both_indexes(folder: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "audit"
    code, text, err = invoke("export", "--dir", str(folder), "--camera", "cam2", "--out", str(out))
    assert code == 0, err
    assert "exported 2 image(s)" in text
    lines = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [d["camera"] for d in lines] == ["cam2", "cam2"] and all(d["verdict"] == "defect" for d in lines)
    assert all((out / d["file"]).read_bytes()[:2] == b"\xff\xd8" for d in lines)  # the JPEGs themselves
    with (out / "index.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["event_id"] for r in table] == [d["event_id"] for d in lines]
    assert table[0]["labels"].startswith("scratch:") and table[0]["file"] == lines[0]["file"]
    assert not list(tmp_path.glob(".*partial*"))


def test_export_to_a_tar_gz(folder: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "audit.tar.gz"
    code, _, err = invoke("export", "--dir", str(folder), "--verdict", "defect", "--out", str(out))
    assert code == 0, err
    with tarfile.open(out) as tar:
        names = tar.getnames()
        index = tar.extractfile("index.jsonl")
        assert index is not None
        files = [json.loads(line)["file"] for line in index.read().decode().splitlines()]
    assert len(files) == 3 and set(files) <= set(names) and "index.csv" in names


def test_purge_asks_first_and_deletes_only_what_matches(folder: pathlib.Path) -> None:
    code, out, _ = invoke("purge", "--dir", str(folder), "--camera", "cam1", input="n\n")
    assert code == 1 and "delete 3 image(s)" in out and "nothing deleted" in out
    assert len(_events(folder)) == 5
    code, out, _ = invoke("purge", "--dir", str(folder), "--camera", "cam1", "--until", "2025-12-05T10:15Z",
                          input="y\n")
    assert code == 0 and "deleted 2 image(s)" in out
    left = _events(folder)
    assert [(r["camera"], r["verdict"]) for r in left] == [("cam2", "defect"), ("cam1", "pass"), ("cam2", "defect")]
    assert len(list(folder.rglob("*.jpg"))) == 3  # the files went with their rows
    code, out, _ = invoke("purge", "--dir", str(folder), "--yes")
    assert code == 0 and "deleted 3 image(s)" in out and not list(folder.rglob("*.jpg"))
    code, out, _ = invoke("purge", "--dir", str(folder), "--yes")
    assert code == 0 and "nothing to purge" in out


@pytest.mark.parametrize(("args", "message"), [
    # a time that is none
    (("list", "--since", "yesterday"), "--since 'yesterday': not a time; expected an ISO 8601 time"),
    # an empty range
    (("list", "--since", "2025-12-05T11:00Z", "--until", "2025-12-05T10:00Z"), "is not before --until"),
    # a camera neither configured nor in the index
    (("purge", "--camera", "cam9", "--yes"), "--camera 'cam9': no such camera here; expected one of: cam1, cam2"),
    # a verdict that is none
    (("list", "--verdict", "bad"), "--verdict 'bad': expected one of: pass, defect, uncertain"),
])
def test_bad_filters_are_refused_with_the_option_named(folder: pathlib.Path, args: tuple[str, ...],
                                                       message: str) -> None:
    code, _, err = invoke(*args, "--dir", str(folder))
    assert code == 2 and message in err, err
    assert len(list(folder.rglob("*.jpg"))) == 5  # nothing deleted


def test_an_export_target_that_exists_is_refused(folder: pathlib.Path, tmp_path: pathlib.Path) -> None:
    target = tmp_path / "taken.tar"
    target.write_bytes(b"keep me")
    code, _, err = invoke("export", "--dir", str(folder), "--out", str(target))
    assert code == 2 and "already exists" in err and target.read_bytes() == b"keep me"


def test_a_folder_that_is_not_an_images_folder_is_refused(tmp_path: pathlib.Path) -> None:
    code, _, err = invoke("list", "--dir", str(tmp_path))
    assert code == 2 and "no images folder here" in err and not (tmp_path / "index.sqlite").exists()


def test_ages_are_relative_to_now(folder: pathlib.Path) -> None:
    assert _events(folder, "--since", "1h") == []  # all were captured on 2025-12-05 10:xx, long before now
    assert len(_events(folder, "--until", "1h")) == 5
