"""The device status JSON Schema (proto/mqtt/status.v1.schema.json). What the publisher really sends is
checked against it in test_mqtt_publisher.py and tests/test_service_rtsp.py."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from agent.capture.grabber import STATES
from agent.publish.camera_status import REASON_STATES
from agent.publish.schema import STATUS_SCHEMA_PATH, load_status_schema, validate_status

ONLINE: dict[str, Any] = {
    "state": "online", "device": "box1", "since": "2026-11-22T03:04:05.123456Z", "version": "0.4.0",
    "outbox_pending": 3, "outbox_evicted": 0,
    "cameras": {
        "cam1": {"state": "online", "reason": None, "since": "2026-11-22T03:04:06.5Z"},
        "dock-2": {"state": "reconnecting", "since": "2026-11-22T03:05:00Z",
                   "reason": "camera source 'rtsp://127.0.0.1:8554/cam': no frame within 5 s or the stream ended"},
    },
    "model": {"id": "surface-conveyor-yolov8n@0123456789ab", "task": "detect",
              "classes": ["scratch", "pit", "stain", "crack", "inclusion", "dent"]},
}
SHUTDOWN: dict[str, Any] = {"state": "offline", "device": "box1", "reason": "shutdown",
                            "since": "2026-11-22T04:00:00.000001Z"}
WILL: dict[str, Any] = {"state": "offline", "device": "box1", "reason": "connection lost"}
LEARNING: dict[str, Any] = {**ONLINE, "learn": {"cam1": {  # learn mode: every frame's fate, sampled frames' statuses
    "sampled_schedule": 3, "sampled_scene_change": 2, "skipped_rate": 40, "skipped_unchanged": 5, "answered": 4,
    "unavailable": 1}}}


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_status_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert STATUS_SCHEMA_PATH.parts[-3:] == ("proto", "mqtt", "status.v1.schema.json")


def _objects(node: Any, path: str = "$") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append((path, node))
        for key, value in node.items():
            found += _objects(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _objects(value, f"{path}[{i}]")
    return found


def test_every_object_is_closed_and_every_property_described() -> None:
    objects = _objects(load_status_schema())
    # root, cameras (a map), dead letters by cause (a map), learn (a map), model, sparkplug, plc (a map),
    # plc_connection, learn_counts, camera, images
    assert len(objects) == 11
    for path, obj in objects:
        if "propertyNames" in obj:  # a map: its keys are checked, its values are closed objects or counts
            assert obj["additionalProperties"] in ({"$ref": "#/$defs/camera"}, {"$ref": "#/$defs/learn_counts"},
                                                   {"$ref": "#/$defs/plc_connection"},
                                                   {"type": "integer", "minimum": 1}), path
            continue
        assert obj.get("additionalProperties") is False, path
        for name, prop in obj["properties"].items():
            assert prop.get("description"), f"{path}.properties.{name} has no description"


def test_camera_states_are_the_grabbers() -> None:
    camera = load_status_schema()["$defs"]["camera"]
    assert tuple(camera["properties"]["state"]["enum"]) == STATES
    assert tuple(camera["if"]["properties"]["state"]["enum"]) == REASON_STATES


@pytest.mark.parametrize(
    "payload",
    [
        ONLINE,
        LEARNING,
        {**ONLINE, "cameras": {}},  # no camera configured
        {k: v for k, v in ONLINE.items() if k not in ("outbox_pending", "outbox_evicted", "cameras", "model")},  # bare
        SHUTDOWN,
        WILL,  # the broker's last will: no since
    ],
)
def test_what_the_agent_and_the_broker_publish_validates(payload: dict[str, Any]) -> None:
    assert validate_status(payload) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(payload: dict[str, Any]) -> None:
        node: Any = payload
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(payload: dict[str, Any]) -> None:
        node: Any = payload
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


@pytest.mark.parametrize(
    ("base", "mutate", "expected"),
    [
        (ONLINE, _delete("device"), "$: 'device' is a required property"),
        (ONLINE, _delete("version"), "$: 'version' is a required property"),  # online says which agent
        (ONLINE, _set("colour", "red"), "$: Additional properties are not allowed"),  # closed
        (ONLINE, _set("state", "degraded"), "$.state: 'degraded' is not one of"),
        (ONLINE, _set("reason", "shutdown"), "$.reason: 'shutdown' should not be valid"),  # online: no reason
        (ONLINE, _set("since", "2026-11-22T03:04:05+01:00"), "$.since: "),  # an offset, not Z
        (ONLINE, _set("outbox_pending", -1), "$.outbox_pending: -1 is less than the minimum of 0"),
        # a camera id is a topic level
        (ONLINE, _set("cameras.cam/1", ONLINE["cameras"]["cam1"]), "$.cameras: 'cam/1' does not match"),
        (ONLINE, _set("cameras.cam1.state", "broken"), "$.cameras.cam1.state: 'broken' is not one of"),
        (ONLINE, _set("cameras.cam1.fps", 15), "$.cameras.cam1: Additional properties are not allowed"),
        (ONLINE, _delete("cameras.cam1.reason"), "$.cameras.cam1: 'reason' is a required property"),  # nullable
        (ONLINE, _set("cameras.cam1.reason", "why"), "$.cameras.cam1.reason: 'why' is not of type 'null'"),
        (ONLINE, _set("cameras.dock-2.reason", None), "$.cameras['dock-2'].reason: None is not of type 'string'"),
        (ONLINE, _set("cameras.dock-2.reason", "x" * 301), "$.cameras['dock-2'].reason: "),  # cut at 300
        (ONLINE, _set("cameras.cam1.since", "2026-13-01T00:00:00Z"), "$.cameras.cam1.since: "),  # month 13
        (LEARNING, _delete("learn.cam1.skipped_rate"), "$.learn.cam1: 'skipped_rate' is a required property"),
        (LEARNING, _set("learn.cam1.guessed", 1), "$.learn.cam1: Additional properties are not allowed"),
        (LEARNING, _set("learn.cam1.answered", -1), "$.learn.cam1.answered: -1 is less than the minimum of 0"),
        (ONLINE, _set("model.task", "segment"), "$.model.task: 'segment' is not one of"),
        (ONLINE, _delete("model.classes"), "$.model: 'classes' is a required property"),
        (ONLINE, _set("model.classes", ["scratch", ""]), "$.model.classes[1]: '' should be non-empty"),
        (SHUTDOWN, _set("model", ONLINE["model"]), "$.model: "),  # the running model: online only
        (SHUTDOWN, _delete("reason"), "$: 'reason' is a required property"),  # offline says why
        (SHUTDOWN, _set("learn", {}), "$.learn: {} should not be valid"),  # no learn counts when offline
        (SHUTDOWN, _set("reason", "bored"), "$.reason: 'bored' is not one of"),
        (SHUTDOWN, _set("cameras", {}), "$.cameras: {} should not be valid"),  # no camera states when offline
        (WILL, _set("device", "box+1"), "$.device: 'box+1' does not match"),
    ],
)
def test_bad_payloads_are_rejected_with_a_path(
    base: dict[str, Any], mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    payload = copy.deepcopy(base)
    mutate(payload)
    problems = validate_status(payload)
    assert any(p.startswith(expected) for p in problems), problems
