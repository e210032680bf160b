"""Sorting a config change into what a reload applies live and what needs a restart (pure: configs in, plan out)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from agent.config.models import AgentConfig, CameraConfig
from agent.config.reload import plan_reload


def config(**changes: Any) -> AgentConfig:
    """Three cameras and a broker; ``changes`` replace top-level sections (as plain data, like the YAML)."""
    data: dict[str, Any] = {
        "device_id": "box1",
        "cameras": [
            {"id": "a", "source": "synthetic://conveyor?seed=1"},
            {"id": "b", "source": "synthetic://conveyor?seed=2", "fps": 5},
            {"id": "c", "source": "rtsp://10.0.0.7/stream"},
        ],
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    }
    data.update(changes)
    return AgentConfig.model_validate(data)


RUNNING = config()
CAMS = RUNNING.model_dump(mode="json")["cameras"]


def cams(*edits: tuple[int, dict[str, Any]]) -> list[dict[str, Any]]:
    out = [dict(c) for c in CAMS]
    for index, change in edits:
        out[index].update(change)
    return out


def test_the_same_config_changes_nothing() -> None:
    plan = plan_reload(RUNNING, config())
    assert not plan.changed and plan.describe() == "no change"
    assert plan.config == RUNNING


@pytest.mark.parametrize(
    ("new_cameras", "added", "removed", "restarted", "retuned"),
    [
        # a fourth camera: only it starts
        ([*CAMS, {"id": "d", "source": "/dev/video0"}], ("d",), (), (), ()),
        # b gone
        ([CAMS[0], CAMS[2]], (), ("b",), (), ()),
        # a's source changed: a new grabber for a
        (cams((0, {"source": "synthetic://conveyor?seed=9"})), (), (), ("a",), ()),
        # b's fps limit is a capture setting too
        (cams((1, {"fps": 10})), (), (), ("b",), ()),
        # c's reconnect backoff: the grabber reads it, so a new grabber
        (cams((2, {"reconnect_max_s": 5})), (), (), ("c",), ()),
        # b's own triage band: the grabber keeps running
        (cams((1, {"triage": {"accept": 0.8, "reject": 0.3}})), (), (), (), ("b",)),
        # c's escalation budget: the grabber keeps running
        (cams((2, {"escalation_rate": {"per_minute": 2}})), (), (), (), ("c",)),
        # source and triage changed: restarted wins
        (cams((0, {"source": "/dev/video1", "triage": {"accept": 0.9}})), (), (), ("a",), ()),
        # the same cameras in another order: nothing to do
        ([CAMS[2], CAMS[0], CAMS[1]], (), (), (), ()),
        # all at once, in the new config's order
        ([{"id": "z", "source": "/dev/video3"}, CAMS[0], *cams((1, {"fps": 2}))[1:2]], ("z",), ("c",), ("b",), ()),
    ],
)
def test_cameras_are_added_removed_restarted_or_retuned(
        new_cameras: list[dict[str, Any]], added: tuple[str, ...], removed: tuple[str, ...],
        restarted: tuple[str, ...], retuned: tuple[str, ...]) -> None:
    plan = plan_reload(RUNNING, config(cameras=new_cameras))
    assert (plan.added, plan.removed, plan.restarted, plan.retuned) == (added, removed, restarted, retuned)
    assert [c.id for c in plan.config.cameras] == [c["id"] for c in new_cameras]
    assert plan.needs_restart == () and not plan.model_changed


@pytest.mark.parametrize(
    ("changes", "live", "needs_restart"),
    [
        # the default triage band applies live
        ({"triage": {"accept": 0.7}}, ("triage.accept",), ()),
        # snapshots and logging too (logging.json under its YAML name)
        ({"snapshots": {"enabled": True}, "logging": {"json": True}}, ("logging.json", "snapshots.enabled"), ()),
        # the default escalation budget applies live ...
        ({"escalation": {"rate_per_camera": {"per_minute": 6}}}, ("escalation.rate_per_camera.per_minute",), ()),
        # ... the rest of escalation needs a restart (a new gRPC channel)
        ({"escalation": {"gateway": "10.0.0.2:50061", "rate_per_camera": {"burst": 1}}},
         ("escalation.rate_per_camera.burst",), ("escalation.gateway",)),
        # the device id and the broker need a restart
        ({"device_id": "box2", "mqtt": {"url": "mqtt://10.0.0.9:1883", "keepalive_s": 60}}, (),
         ("device_id", "mqtt.keepalive_s", "mqtt.url")),
        # so do the outbox, the metrics endpoint and the health windows
        ({"outbox": {"max_rows": 10}, "metrics": {"listen": "127.0.0.1:0"}, "health": {"capture_window_s": 5}},
         (), ("health.capture_window_s", "metrics.listen", "outbox.max_rows")),
        # a list is one field: the providers as a whole
        ({"model": {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}}, ("model.providers",), ()),
    ],
)
def test_sections_are_applied_live_or_left_for_a_restart(
        changes: dict[str, Any], live: tuple[str, ...], needs_restart: tuple[str, ...]) -> None:
    new = config(**changes)
    plan = plan_reload(RUNNING, new)
    assert plan.live == live and plan.needs_restart == needs_restart
    # what runs afterwards: the new values of the live fields, the running ones of the others
    effective = plan.config
    assert (effective.triage, effective.snapshots, effective.logging, effective.model) == (
        new.triage, new.snapshots, new.logging, new.model)
    assert effective.escalation.rate_per_camera == new.escalation.rate_per_camera
    assert effective.escalation.gateway == RUNNING.escalation.gateway
    assert (effective.device_id, effective.mqtt, effective.outbox, effective.metrics, effective.health) == (
        RUNNING.device_id, RUNNING.mqtt, RUNNING.outbox, RUNNING.metrics, RUNNING.health)


def test_a_model_change_is_flagged_and_applied() -> None:
    plan = plan_reload(RUNNING, config(model={"path": "/opt/models/other.onnx", "min_score": 0.1}))
    assert plan.model_changed and plan.config.model.path == pathlib.Path("/opt/models/other.onnx")
    assert plan.live == ("model.min_score", "model.path")
    assert plan.describe() == "model reloaded"


def test_camera_field_changes_are_listed_by_camera_id() -> None:
    plan = plan_reload(RUNNING, config(cameras=cams((1, {"triage": {"accept": 0.8}}))))
    assert plan.live == ("cameras[b].triage",)  # from null to a band: the whole band
    plan = plan_reload(config(cameras=cams((1, {"triage": {"accept": 0.8}}))),
                       config(cameras=cams((1, {"triage": {"accept": 0.9}}))))
    assert plan.live == ("cameras[b].triage.accept",)


def test_describe_says_it_all_in_one_line() -> None:
    new = config(cameras=[*cams((0, {"fps": 3}), (1, {"triage": {"reject": 0.1}}))[:2],
                          {"id": "d", "source": "/dev/video0"}, {"id": "e", "source": "/dev/video1"}],
                 triage={"accept": 0.7}, mqtt={"url": "mqtt://10.0.0.9:1883"})
    assert plan_reload(RUNNING, new).describe() == (
        "added cameras: d, e; removed camera: c; restarted camera: a; retuned camera: b; applied: triage.accept; "
        "needs a restart (not applied): mqtt.url")


def test_the_plan_keeps_the_new_configs_camera_objects() -> None:
    new = config(cameras=cams((1, {"triage": {"accept": 0.8}})))
    plan = plan_reload(RUNNING, new)
    assert plan.config.cameras[1] == new.cameras[1] and isinstance(plan.config.cameras[1], CameraConfig)
    assert plan.config.triage_for(plan.config.cameras[1]).accept == 0.8
