"""Audit images through the whole agent: synthetic cameras, a real Mosquitto, a prefilter that calls every frame a
defect (the conveyor scene cannot make every frame one). Quick: every event names its image and the image is there.
Slow: 10 minutes at 15 fps on two cameras with a 1 MiB bound, eviction running all the time; a sampler thread
checks every camera's bytes against the bound the whole time."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from agent.config.images import ImagesConfig
from agent.config.models import AgentConfig, CameraConfig, MetricsConfig, MqttConfig, SnapshotConfig
from agent.core.detections import Detection, PrefilterResult
from agent.outputs.images.store import Disk, Query
from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_payload, validate_status
from agent.runtime.service import AgentService
from tests.conftest import MqttCollector

MiB = 1024 * 1024
# the soak's length; read at import, before the autouse fixture clears EDGE_AGENT_* (a shorter trial run: 0.5)
SOAK_MINUTES = float(os.environ.get("EDGE_AGENT_IMAGES_SOAK_MIN", "10"))


class AlwaysDefect:
    """A prefilter that finds a sure scratch in every frame."""

    def infer(self, image: np.ndarray) -> PrefilterResult:
        h, w = image.shape[:2]
        box = (w * 0.25, h * 0.25, w * 0.5, h * 0.5)
        return PrefilterResult("always-defect", (Detection("scratch", 0, 0.97, box),), 0.1)


def _config(broker: LocalMosquitto, root: pathlib.Path, cameras: list[CameraConfig], **images: object) -> AgentConfig:
    return AgentConfig(device_id="box1", cameras=cameras, mqtt=MqttConfig(url=broker.url, stats_interval_s=0),
                       images=ImagesConfig(enabled=True, dir=root, min_free_bytes=0, **images))  # type: ignore[arg-type]


def test_every_defect_event_names_its_image_and_the_image_is_there(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], tmp_path: pathlib.Path) -> None:
    frames = 20
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    cfg = _config(mosquitto, tmp_path / "images", [
        CameraConfig(id="belt1", source=f"synthetic://conveyor?seed=1&fps=0&frames={frames}&width=320&height=240")],
        reuse_snapshot=False)
    cfg = cfg.model_copy(update={"snapshots": SnapshotConfig(enabled=True, verdicts=["defect"])})
    service = AgentService(cfg, prefilter=AlwaysDefect())
    service.start()
    service.wait(threading.Event(), duration=60.0)
    assert service.images is not None
    snapshot = service.snapshot()
    service.shutdown(timeout=10.0)
    docs = [json.loads(m.payload) for m in sub.wait_for(frames, timeout=10.0)]
    assert len(docs) == frames and all(validate_payload(d) == [] for d in docs)
    assert all(d["image"]["id"] == d["event_id"] for d in docs)
    for d in docs:
        image = cv2.imread(str(tmp_path / "images" / d["image"]["path"]))
        assert image is not None and image.shape == (240, 320, 3), d["image"]  # the raw frame, full size
    store = service.images.store
    rows = list(type(store).open(store.root, create=False, repair=False).rows(Query(cameras=("belt1",))))
    assert [r.event_id for r in rows] == [d["event_id"] for d in docs]
    assert [r.payload for r in rows] == docs  # the index holds the events as published
    assert snapshot.images is not None and sum(snapshot.images.kept.values()) <= frames


def test_reuse_snapshot_keeps_the_snapshot_bytes_and_ops_report_the_images(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], tmp_path: pathlib.Path) -> None:
    frames = 8
    snaps = collector(mosquitto.url, "edge/box1/+/snapshot")
    cfg = _config(mosquitto, tmp_path / "images", [
        CameraConfig(id="belt1", source=f"synthetic://conveyor?seed=2&fps=0&frames={frames}&width=320&height=240")],
        reuse_snapshot=True)
    cfg = cfg.model_copy(update={"snapshots": SnapshotConfig(enabled=True, verdicts=["defect"], store_in_outbox=True),
                                 "metrics": MetricsConfig(listen="127.0.0.1:0")})
    service = AgentService(cfg, prefilter=AlwaysDefect())
    service.start()
    service.wait(threading.Event(), duration=60.0)
    deadline = time.monotonic() + 10.0
    while service.images is not None and service.images.stats().queued and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.health is not None and service.images is not None
    metrics = service.health.metrics_text()
    _healthy, doc = service.health.health_document()
    rows = list(service.images.store.rows(Query()))
    stored = {(tmp_path / "images" / r.path).read_bytes() for r in rows}
    service.shutdown(timeout=10.0)
    published = {bytes(m.payload) for m in snaps.wait_for(frames, timeout=10.0)}
    assert len(rows) == frames and stored == published  # the snapshot's JPEG, encoded once, kept as the image
    assert f'edge_agent_images_kept_total{{verdict="defect"}} {frames}' in metrics
    assert 'edge_agent_images_stored{camera="belt1"} 8' in metrics and "edge_agent_images_disk_full 0" in metrics
    assert doc["images"]["disk_full"] is False and doc["images"]["stored"] == frames


def test_a_full_disk_is_reported_and_every_event_still_published(
        mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector], tmp_path: pathlib.Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC through the store's seam (``Disk.write``) for every image: inspection and publishing go on."""
    def no_space(self: Disk, path: pathlib.Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(Disk, "write", no_space)
    frames = 10
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    statuses = collector(mosquitto.url, "edge/box1/status")
    cfg = _config(mosquitto, tmp_path / "images", [
        CameraConfig(id="belt1", source=f"synthetic://conveyor?seed=3&fps=0&frames={frames}&width=320&height=240")])
    cfg = cfg.model_copy(update={"metrics": MetricsConfig(listen="127.0.0.1:0")})
    service = AgentService(cfg, prefilter=AlwaysDefect())
    service.start()
    service.wait(threading.Event(), duration=60.0)
    deadline = time.monotonic() + 10.0
    while service.images is not None and service.images.stats().queued and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.health is not None
    status, metrics = service.health.status_line(), service.health.metrics_text()
    _healthy, doc = service.health.health_document()
    republished = statuses.wait_until(lambda m: json.loads(m.payload).get("images", {}).get("disk_full", False))
    summary = service.shutdown(timeout=10.0)
    assert len(sub.wait_for(frames, timeout=10.0)) == frames and summary.publisher is not None
    assert summary.publisher.acked == frames  # nothing else lost
    assert doc["images"]["disk_full"] is True and "No space left on device" in doc["images"]["problem"]
    assert doc["images"]["failed"] == {"no_space": frames}
    assert "images: not kept, disk full" in status
    assert "edge_agent_images_disk_full 1" in metrics
    assert f'edge_agent_images_failed_total{{reason="no_space"}} {frames}' in metrics
    # the retained status said so too (republished when the disk turned full), valid against status.v1
    assert republished
    docs = [json.loads(m.payload) for m in statuses.messages]
    assert all(validate_status(d) == [] for d in docs)
    full = [d["images"] for d in docs if d.get("images", {}).get("disk_full")]
    assert full and "No space left on device" in full[0]["problem"] and full[0]["stored"] == 0


def _bytes_on_disk(root: pathlib.Path, camera: str) -> int:
    total = 0
    for path in (root / camera).rglob("*.jpg"):
        with contextlib.suppress(FileNotFoundError):  # evicted while we looked
            total += path.stat().st_size
    return total


@pytest.mark.slow
@pytest.mark.timeout(SOAK_MINUTES * 60 + 180)
def test_limits_hold_for_ten_minutes_at_15_fps_with_every_frame_a_defect(
        mosquitto: LocalMosquitto, tmp_path: pathlib.Path) -> None:
    minutes = SOAK_MINUTES
    root = tmp_path / "images"
    cams = ["belt1", "belt2"]
    cfg = _config(mosquitto, root, [
        CameraConfig(id=c, source=f"synthetic://conveyor?seed={i}&fps=15&width=320&height=240")  # 15 KiB JPEGs
        for i, c in enumerate(cams)],
        max_bytes=MiB, queue_size=64)
    service = AgentService(cfg, prefilter=AlwaysDefect())
    indexed = dict.fromkeys(cams, 0)  # the most bytes the index held, per camera
    on_disk = dict.fromkeys(cams, 0)  # the most bytes of JPEGs seen in the camera's folder
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            keeper = service.images
            if keeper is None:
                continue
            for cam, size in keeper.stats().bytes.items():
                indexed[cam] = max(indexed[cam], size)
            for cam in cams:
                on_disk[cam] = max(on_disk[cam], _bytes_on_disk(root, cam))

    watcher = threading.Thread(target=watch, daemon=True)
    service.start()
    watcher.start()
    t0 = time.monotonic()
    service.wait(threading.Event(), duration=minutes * 60.0)
    seconds = time.monotonic() - t0
    stop.set()
    watcher.join(5.0)
    st = service.images.stats() if service.images is not None else None
    largest = max(r.bytes for r in service.images.store.rows(Query())) if service.images is not None else 0
    summary = service.shutdown(timeout=15.0)
    assert st is not None
    kept = sum(st.kept.values())
    fps = [round(summary.cameras[c].frames_read / seconds, 1) for c in cams]
    print(f"images soak: {seconds:.0f} s, {fps} fps read (15 asked; fewer where the box is busy), inspected "
          f"{summary.inspected}, kept {kept}, evicted {st.evicted}, dropped {st.dropped}, failed {st.failed}, "
          f"most bytes per camera in the index {indexed}, on disk "
          f"{on_disk} (bound {MiB}), largest image {largest} B")
    for cam in cams:
        read = summary.cameras[cam].frames_read  # at most 15 fps; fewer where the box is busy
        assert summary.inspected[cam] >= 0.9 * read, (summary.inspected, summary.cameras)  # the images kept up
        assert 0.8 * MiB < indexed[cam] <= MiB, (cam, indexed[cam])  # filled up to the bound, never over it
        assert on_disk[cam] <= MiB + largest, (cam, on_disk[cam])  # on disk: at most one file more (sampled)
    stored = sum(st.images.values())
    assert st.evicted.get("size", 0) >= kept - stored - 2 > 0  # every image but the last ones was evicted
    assert st.failed == {} and st.dropped.get("queue_full", 0) <= 0.01 * kept
