"""The image keeper: which frames are kept, the event naming its image, the queue-full policy, the age limit on a
faked clock, and a full disk (ENOSPC through the store's seam, a free-space floor, and a real 1 MiB tmpfs)."""

from __future__ import annotations

import contextlib
import datetime
import logging
import pathlib
import subprocess
from collections.abc import Iterator

import cv2
import pytest

from agent.config.images import CameraImagesConfig, ImagesConfig
from agent.core.ports import Published
from agent.outputs.images.keeper import ImageKeeper, _Write
from agent.outputs.images.store import ImageStore, Query
from agent.publish.schema import validate_payload
from tests.outputs.images.helpers import FullDisk, inspection

MiB = 1024 * 1024


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _keeper(root: pathlib.Path, disk: FullDisk | None = None, **cfg: object) -> ImageKeeper:
    config = ImagesConfig(enabled=True, min_free_bytes=0, **cfg)  # type: ignore[arg-type]
    return ImageKeeper(config, ImageStore.open(root, disk=disk))


def _write_all(keeper: ImageKeeper) -> int:
    """Run the writer's queue on this thread (no thread: the test sees every step); how many written."""
    n = 0
    while not keeper._queue.empty():
        job = keeper._queue.get_nowait()
        if isinstance(job, _Write):
            n += keeper.write(job)
            keeper._frames_queued -= 1
    return n


@pytest.mark.parametrize(("cfg", "verdicts", "kept"), [
    # defaults: every defect and uncertain frame, no pass
    ({}, ["pass", "defect", "uncertain", "pass"], [False, True, True, False]),
    # 1 in 3 passes: the 1st, 4th, 7th
    ({"pass_every_n": 3}, ["pass"] * 7, [True, False, False, True, False, False, True]),
    # only defects
    ({"verdicts": ["defect"]}, ["uncertain", "defect"], [False, True]),
    # the camera turned off
    ({"cameras": {"cam1": CameraImagesConfig(enabled=False)}}, ["defect"], [False]),
])
def test_which_frames_are_kept(tmp_path: pathlib.Path, cfg: dict[str, object], verdicts: list[str],
                               kept: list[bool]) -> None:
    keeper = _keeper(tmp_path, **cfg)
    assert [keeper.wants(inspection(verdict=v, sequence=i)) for i, v in enumerate(verdicts)] == kept


def test_passes_per_minute_follow_the_clock(tmp_path: pathlib.Path) -> None:
    keeper = _keeper(tmp_path, pass_per_minute=2.0)  # one pass every 30 s at most, per camera
    clock = Clock(100.0)
    keeper._monotonic = clock
    drawn = []
    for t in (100.0, 110.0, 129.9, 130.0, 131.0, 175.0):
        clock.t = t
        drawn.append(keeper.wants(inspection(verdict="pass")))
    assert drawn == [True, False, False, True, False, True]
    assert keeper.wants(inspection(camera="cam2", verdict="pass"))  # its own schedule


def test_kept_image_is_named_in_the_event_and_written_where_it_says(tmp_path: pathlib.Path) -> None:
    keeper = _keeper(tmp_path)
    seen = inspection(verdict="defect", size=(320, 240))
    event = keeper.keep(seen)
    assert event.image is not None and event.image.id == event.event_id
    payload = event.to_payload()
    assert payload["image"] == {"id": event.event_id, "path": event.image.path}
    assert validate_payload(payload) == []
    assert _write_all(keeper) == 1
    image = cv2.imread(str(tmp_path / event.image.path))
    assert image.shape == (240, 320, 3)  # full resolution by default
    (row,) = keeper.store.rows(Query(event_ids=(event.event_id,)))
    assert row.payload == payload and row.verdict == "defect"
    assert keeper.stats().kept == {"defect": 1}


def test_an_event_without_an_image_has_no_image_field(tmp_path: pathlib.Path) -> None:
    payload = inspection(verdict="pass").event.to_payload()
    assert "image" not in payload and validate_payload(payload) == []


def test_max_width_scales_down_and_a_given_jpeg_is_kept_as_is(tmp_path: pathlib.Path) -> None:
    keeper = _keeper(tmp_path, max_width=160)
    small = keeper.keep(inspection(size=(320, 240), sequence=1))
    given = keeper.keep(inspection(size=(320, 240), sequence=2), jpeg=b"\xff\xd8snapshot\xff\xd9")
    assert _write_all(keeper) == 2
    assert small.image is not None and given.image is not None
    assert cv2.imread(str(tmp_path / small.image.path)).shape == (120, 160, 3)
    assert (tmp_path / given.image.path).read_bytes() == b"\xff\xd8snapshot\xff\xd9"


def test_a_camera_overrides_width_and_quality(tmp_path: pathlib.Path) -> None:
    keeper = _keeper(tmp_path, max_width=160, cameras={"cam2": CameraImagesConfig(max_width=0, quality=40)})
    scaled = keeper.keep(inspection("cam1", size=(320, 240), sequence=1))
    full = keeper.keep(inspection("cam2", size=(320, 240), sequence=1))
    assert _write_all(keeper) == 2 and scaled.image is not None and full.image is not None
    assert cv2.imread(str(tmp_path / scaled.image.path)).shape == (120, 160, 3)
    assert cv2.imread(str(tmp_path / full.image.path)).shape == (240, 320, 3)  # 0: full resolution
    noise = inspection("cam2", size=(320, 240), sequence=1).frame.image  # the same noise, at quality 90
    at_90 = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].size
    assert (tmp_path / full.image.path).stat().st_size < 0.7 * at_90  # quality 40 is much smaller


@pytest.mark.parametrize(("image", "problem"), [
    ({"id": "e1", "path": "/etc/passwd"}, "does not match"),  # absolute: the path is relative to images.dir
    ({"path": "cam1/2026-12-05/x.jpg"}, "'id' is a required property"),
    ({"id": "e1", "path": "cam1/x.jpg", "size": 3}, "Additional properties are not allowed"),
])
def test_the_schema_refuses_a_bad_image_field(image: dict[str, object], problem: str) -> None:
    payload = inspection().event.to_payload() | {"image": image}
    problems = validate_payload(payload)
    assert problems and problem in problems[0], problems


def test_full_queue_publishes_the_event_without_image_and_counts_it(tmp_path: pathlib.Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    keeper = _keeper(tmp_path, queue_size=2)
    with caplog.at_level(logging.WARNING):
        events = [keeper.keep(inspection(sequence=i)) for i in range(5)]
    assert [e.image is not None for e in events] == [True, True, False, False, False]
    assert keeper.stats().dropped == {"queue_full": 3} and keeper.stats().queued == 2
    assert len([r for r in caplog.records if "behind" in r.message]) == 1  # once a minute, not per frame
    assert _write_all(keeper) == 2


def test_escalated_answer_updates_the_index(tmp_path: pathlib.Path) -> None:
    keeper = _keeper(tmp_path)
    first = keeper.keep(inspection(verdict="uncertain"))
    _write_all(keeper)
    answered = type(first)(**{**first.__dict__, "verdict": "defect", "revision": 2})
    keeper.on_published(Published(answered, 0.001, escalated=True))
    keeper._index(keeper._queue.get_nowait().event)  # type: ignore[union-attr]
    (row,) = keeper.store.rows(Query())
    assert (row.verdict, row.revision) == ("defect", 2)


def test_age_limit_per_camera_on_a_faked_clock(tmp_path: pathlib.Path) -> None:
    day = 86400.0
    now = datetime.datetime(2026, 12, 5, tzinfo=datetime.timezone.utc)
    keeper = _keeper(tmp_path, max_days=2.0, cameras={"cam2": CameraImagesConfig(max_days=0.5)})
    for age_days in (3.0, 1.0, 0.25):  # one image of each age per camera
        for camera in ("cam1", "cam2"):
            keeper.keep(inspection(camera=camera, at=now - datetime.timedelta(days=age_days)))
    _write_all(keeper)
    keeper._clock = Clock(now.timestamp())
    assert keeper.evict_by_age() == 3  # cam1's 3-day-old; cam2's 3-day and 1-day-old
    assert keeper.store.totals().keys() == {"cam1", "cam2"}
    ages = {c: sorted(round((now.timestamp() - r.captured) / day, 2) for r in keeper.store.rows(Query(cameras=(c,))))
            for c in ("cam1", "cam2")}
    assert ages == {"cam1": [0.25, 1.0], "cam2": [0.25]}
    assert keeper.stats().evicted == {"age": 3}


def test_enospc_is_counted_reported_and_cleared_by_the_next_write(tmp_path: pathlib.Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    disk = FullDisk()
    keeper = _keeper(tmp_path, disk)
    changes: list[bool] = []
    keeper.on_change = lambda: changes.append(keeper.stats().space_problem is not None)  # the status republish
    disk.full = True
    with caplog.at_level(logging.WARNING):
        for i in range(5):
            keeper.keep(inspection(sequence=i))
        assert _write_all(keeper) == 0
    st = keeper.stats()
    assert st.failed == {"no_space": 5} and st.space_problem is not None and "No space" in st.space_problem
    assert len([r for r in caplog.records if "no_space" in r.getMessage()]) == 1
    assert not list(tmp_path.rglob("*.jpg*"))  # nothing half-written
    disk.full = False
    keeper.keep(inspection(sequence=9))
    assert _write_all(keeper) == 1 and keeper.stats().space_problem is None
    assert changes == [True, False]  # once when it turned full, once when it had room again
    assert keeper.status_fields() == {"images": {"disk_full": False, "problem": None, "stored": 1,
                                                 "bytes": keeper.stats().bytes["cam1"]}}


def test_free_space_floor_skips_the_write(tmp_path: pathlib.Path) -> None:
    disk = FullDisk()
    disk.free = 10 * MiB
    keeper = ImageKeeper(ImagesConfig(enabled=True, min_free_bytes=64 * MiB), ImageStore.open(tmp_path, disk=disk))
    keeper.keep(inspection())
    assert _write_all(keeper) == 0
    st = keeper.stats()
    assert st.failed == {"low_space": 1} and "min_free_bytes" in (st.space_problem or "")


@contextlib.contextmanager
def _tmpfs(path: pathlib.Path, size: str) -> Iterator[None]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode}); the ENOSPC seam "
                    "test covers a full disk")
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)  # lazy: a file left open cannot keep it


def test_a_real_full_tmpfs_is_reported_not_fatal(tmp_path: pathlib.Path) -> None:
    """A 1 MiB tmpfs, the limits far above it: the disk fills, writes fail with the OS's ENOSPC, counted."""
    root = tmp_path / "small"
    with _tmpfs(root, "1m"):
        keeper = _keeper(root, max_bytes=64 * MiB)
        try:
            kept = [keeper.keep(inspection(sequence=i, size=(320, 240))) for i in range(16)]
            written = _write_all(keeper)
            st = keeper.stats()
        finally:
            keeper.store.close()
    assert all(e.image is not None for e in kept)  # the queue took them all; the disk refused some
    assert 0 < written < 16 and st.failed.get("no_space", 0) == 16 - written, st
    assert st.space_problem is not None

