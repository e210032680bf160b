"""The SQLite outbox on its own: order, bounds and eviction, persistence, bad files."""

from __future__ import annotations

import logging
import pathlib
import sqlite3
import subprocess
from collections.abc import Iterator

import pytest

from agent.errors import OutboxError
from agent.publish.outbox import Outbox


def fill(box: Outbox, n: int, size: int = 10, start: int = 0) -> list[int]:
    return [box.append(f"e{start + i}", "cam", "edge/d/cam/tags", b"x" * size) for i in range(n)]


def test_rows_come_back_oldest_first_and_leave_only_when_deleted(tmp_path: pathlib.Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    ids = fill(box, 5)
    assert [r.event_id for r in box.next_rows(0, 10)] == ["e0", "e1", "e2", "e3", "e4"]
    assert [r.id for r in box.next_rows(ids[1], 2)] == ids[2:4]  # paging after an id
    assert box.delete([ids[0], ids[2]]) == 2
    assert box.delete([ids[0]]) == 0  # already gone: ignored
    assert [r.event_id for r in box.next_rows(0, 10)] == ["e1", "e3", "e4"]
    st = box.stats()
    assert (st.rows, st.bytes, st.appended, st.deleted, st.evicted) == (3, 30, 5, 2, 0)
    box.close()


def test_rows_survive_a_reopen_and_count_as_recovered(tmp_path: pathlib.Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    ids = fill(box, 4)
    box.mark_sent(ids[1])
    box.delete([ids[0]])
    box.close()
    again = Outbox(tmp_path / "o.sqlite")
    assert [r.event_id for r in again.next_rows(0, 10)] == ["e1", "e2", "e3"]
    assert again.stats().recovered == 3 and again.sent_high_water == ids[1]
    new = again.append("e9", "cam", "t", b"y")
    assert new > ids[-1]  # ids keep growing after a restart (AUTOINCREMENT): order is kept
    again.close()


@pytest.mark.parametrize(
    ("max_rows", "max_bytes", "n", "kept"),
    [
        (3, 10_000, 5, ["e2", "e3", "e4"]),  # row bound: the two oldest go
        (100, 35, 5, ["e2", "e3", "e4"]),  # byte bound: 10-byte rows, 35 bytes fit three
        (1, 10_000, 3, ["e2"]),  # a bound of one keeps only the newest
    ],
)
def test_bounds_evict_the_oldest_and_count_it(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture,
                                              max_rows: int, max_bytes: int, n: int, kept: list[str]) -> None:
    caplog.set_level(logging.WARNING, logger="agent.publish.outbox")
    box = Outbox(tmp_path / "o.sqlite", max_rows=max_rows, max_bytes=max_bytes)
    fill(box, n)
    assert [r.event_id for r in box.next_rows(0, 100)] == kept
    st = box.stats()
    assert st.evicted == st.evicted_total == n - len(kept) and st.rows == len(kept)
    assert any("evicted the" in r.getMessage() for r in caplog.records)  # logged, never silent
    box.close()
    assert Outbox(tmp_path / "o.sqlite", max_rows=max_rows, max_bytes=max_bytes).stats().evicted_total == n - len(kept)


def test_an_event_larger_than_the_whole_outbox_is_refused(tmp_path: pathlib.Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=100)
    fill(box, 2)
    with pytest.raises(OutboxError, match="is 101 bytes, larger than outbox.max_bytes=100"):
        box.append("big", "cam", "t", b"z" * 101)
    assert box.stats().rows == 2  # nothing already accepted was lost


@pytest.mark.parametrize(
    ("max_rows", "max_bytes", "kept"),
    [
        (100, 10_000, ["e0", "e1", "b0", "b1", "b2", "b3"]),  # room for all: one transaction, in order
        (3, 10_000, ["b1", "b2", "b3"]),  # the bound applies row by row, within the batch too
        (100, 45, ["b0", "b1", "b2", "b3"]),  # 45 bytes: b2 evicts e0, b3 (15 bytes) evicts e1: 10+10+10+15 fit
    ],
)
def test_a_batch_is_committed_in_order_and_evicts_like_single_rows(tmp_path: pathlib.Path, max_rows: int,
                                                                   max_bytes: int, kept: list[str]) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_rows=max_rows, max_bytes=max_bytes)
    fill(box, 2)
    ids = box.append_many([(f"b{i}", "cam", "edge/d/cam/tags", b"x" * (15 if i == 3 else 10)) for i in range(4)])
    assert ids == sorted(ids) and len(ids) == 4  # one id each, in the order given
    assert [r.event_id for r in box.next_rows(0, 100)] == kept
    st = box.stats()
    assert (st.rows, st.appended, st.evicted) == (len(kept), 6, 6 - len(kept))
    assert st.bytes == sum(len(r.payload) for r in box.next_rows(0, 100))
    assert box.append_many([]) == []
    box.close()


def test_a_batch_with_one_bad_event_stores_none_of_them(tmp_path: pathlib.Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=100)
    fill(box, 2)
    with pytest.raises(OutboxError, match="event big is 101 bytes, larger than outbox.max_bytes=100"):
        box.append_many([("ok", "cam", "t", b"y"), ("big", "cam", "t", b"z" * 101)])
    st = box.stats()
    assert [r.event_id for r in box.next_rows(0, 10)] == ["e0", "e1"] and (st.rows, st.bytes) == (2, 20)


def test_a_batch_the_database_refuses_is_rolled_back_whole(tmp_path: pathlib.Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_rows=2)
    fill(box, 2)
    box._db.execute("CREATE TRIGGER no_b1 BEFORE INSERT ON events WHEN NEW.event_id = 'b1' "  # noqa: SLF001
                    "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END")
    with pytest.raises(OutboxError, match="cannot store event b0 and 1 more: refused by a test trigger"):
        box.append_many([("b0", "cam", "t", b"x" * 10), ("b1", "cam", "t", b"x" * 10)])
    st = box.stats()  # the eviction b0 needed was rolled back too: nothing accepted was lost, the counts hold
    assert [r.event_id for r in box.next_rows(0, 10)] == ["e0", "e1"]
    assert (st.rows, st.bytes, st.appended, st.evicted) == (2, 20, 2, 0)
    box.close()


def test_corrupt_file_is_moved_aside_and_a_new_outbox_starts(tmp_path: pathlib.Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not an sqlite database" * 100)
    caplog.set_level(logging.ERROR, logger="agent.publish.outbox")
    box = Outbox(path)
    assert box.corrupt_moved_to is not None
    moved = pathlib.Path(box.corrupt_moved_to)
    assert moved.read_bytes().startswith(b"this is not an sqlite database")  # kept for inspection
    assert "moved it to" in caplog.text and str(moved) in caplog.text
    fill(box, 2)
    assert box.stats().rows == 2 and box.stats().corrupt_moved_to == str(moved)


def test_a_database_of_another_shape_is_moved_aside(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "o.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, something TEXT)")
    box = Outbox(path)
    assert box.corrupt_moved_to and box.stats().rows == 0


@pytest.fixture
def immutable_dir(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A folder nobody, root included, can create files in (chattr +i)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here (needs root and an ext2/3/4 or similar file system)")
    yield locked
    subprocess.run(["chattr", "-i", str(locked)], check=True)


def test_unwritable_directory_is_a_clear_error(immutable_dir: pathlib.Path) -> None:
    with pytest.raises(OutboxError, match=r"outbox directory .*locked is not writable by this user .*"
                                          r"set outbox.path to a writable place"):
        Outbox(immutable_dir / "o.sqlite")


def test_unwritable_outbox_file_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    fill(box, 1)
    box.close()
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        with pytest.raises(OutboxError, match="cannot be opened for writing"):
            Outbox(path)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert Outbox(path).stats().rows == 1  # and the events in it were not touched


def test_path_under_a_file_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "plainfile").write_text("x")
    with pytest.raises(OutboxError, match=r"outbox directory .*plainfile cannot be created .*set outbox.path"):
        Outbox(tmp_path / "plainfile" / "o.sqlite")


def test_bad_bounds(tmp_path: pathlib.Path) -> None:
    with pytest.raises(OutboxError, match="bounds must be positive"):
        Outbox(tmp_path / "o.sqlite", max_rows=0)
