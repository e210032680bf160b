"""The images' folder: per-camera byte bound (oldest first), age cut-off, queries, repair after a crash."""

from __future__ import annotations

import datetime
import pathlib

from agent.outputs.images.store import INDEX, ImageRow, ImageStore, Query, image_path

T0 = 1_764_900_000.0  # 2025-12-05T02:00:00Z


def _row(camera: str, n: int, verdict: str = "defect", t: float = T0) -> ImageRow:
    at = datetime.datetime.fromtimestamp(t + n, datetime.timezone.utc)
    event_id = f"{camera}-{n:04d}"
    return ImageRow(event_id, camera, t + n, verdict, image_path(camera, event_id, at), 0, 1, {"event_id": event_id})


def _files(root: pathlib.Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))


def test_path_is_camera_date_time_and_event_id() -> None:
    at = datetime.datetime(2026, 12, 5, 1, 2, 3, 450000, tzinfo=datetime.timezone.utc)
    assert image_path("cam1", "e1", at) == "cam1/2026-12-05/010203.450000_e1.jpg"


def test_a_camera_never_holds_more_bytes_than_its_bound_oldest_go_first(tmp_path: pathlib.Path) -> None:
    store = ImageStore.open(tmp_path)
    jpeg = b"x" * 1000
    evicted = [store.add(_row("a", n), jpeg, max_bytes=3500) for n in range(10)]
    store.add(_row("b", 0), jpeg, max_bytes=3500)  # another camera: its own bound, a's images untouched
    # 3 images fit 3500 bytes: the 4th evicts the 1st, and so on
    assert evicted == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert store.totals() == {"a": (3, 3000), "b": (1, 1000)}
    assert [r.event_id for r in store.rows(Query(cameras=("a",)))] == ["a-0007", "a-0008", "a-0009"]
    assert len(_files(tmp_path)) == 4  # the evicted files are gone from the disk too


def test_queries_filter_by_time_camera_verdict_and_event_id(tmp_path: pathlib.Path) -> None:
    store = ImageStore.open(tmp_path)
    for n in range(6):
        store.add(_row("a" if n % 2 else "b", n, "pass" if n < 2 else "defect"), b"j", max_bytes=10**6)
    ids = lambda q: [r.event_id for r in store.rows(q)]  # noqa: E731
    assert ids(Query(since=T0 + 2, until=T0 + 4)) == ["b-0002", "a-0003"]  # since inclusive, until exclusive
    assert ids(Query(cameras=("a",), verdicts=("defect",))) == ["a-0003", "a-0005"]
    assert ids(Query(event_ids=("b-0004", "nope"))) == ["b-0004"]
    assert store.delete(Query(verdicts=("pass",))) == 2
    assert store.totals() == {"a": (2, 2), "b": (2, 2)}


def test_age_cut_off_deletes_only_older_images_of_the_camera(tmp_path: pathlib.Path) -> None:
    store = ImageStore.open(tmp_path)
    for n in range(5):
        store.add(_row("a", n), b"j", max_bytes=10**6)
        store.add(_row("b", n), b"j", max_bytes=10**6)
    assert store.evict_older(T0 + 3, "a") == 3
    assert store.totals() == {"a": (2, 2), "b": (5, 5)}


def test_later_revision_updates_the_index_an_earlier_one_does_not(tmp_path: pathlib.Path) -> None:
    store = ImageStore.open(tmp_path)
    store.add(_row("a", 0, "uncertain"), b"j", max_bytes=10**6)
    assert store.update("a-0000", "defect", 2, {"revision": 2})
    assert not store.update("a-0000", "pass", 1, {"revision": 1})  # late revision 1: ignored
    assert not store.update("missing", "pass", 1, {})
    (row,) = store.rows(Query())
    assert (row.verdict, row.revision, row.payload) == ("defect", 2, {"revision": 2})


def test_reopen_keeps_the_index_and_repairs_what_a_crash_left(tmp_path: pathlib.Path) -> None:
    store = ImageStore.open(tmp_path)
    store.add(_row("a", 0), b"jpeg", max_bytes=10**6)
    store.close()
    orphan = tmp_path / "a" / "2025-12-05" / "020000.000000_orphan.jpg"  # renamed, its row never inserted
    orphan.write_bytes(b"o")
    (tmp_path / "a" / "2025-12-05" / "x.jpg.tmp").write_bytes(b"t")  # a write cut short
    store = ImageStore.open(tmp_path)
    assert store.totals() == {"a": (1, 4)}
    assert _files(tmp_path) == [_row("a", 0).path] and not list(tmp_path.rglob("*.tmp"))
    assert (tmp_path / INDEX).is_file()
