"""Topic names: pure functions."""

from __future__ import annotations

import pytest

from agent.publish.topics import (
    TagsTopic,
    parse_tags_topic,
    snapshot_topic,
    stats_topic,
    status_topic,
    tags_filter,
    tags_topic,
)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (tags_topic("edge", "box1", "cam1"), "edge/box1/cam1/tags"),  # the default layout
        (
            tags_topic("plant1/line3", "box1", "cam-2.a"),
            "plant1/line3/box1/cam-2.a/tags",
        ),  # multi-level prefix
        (snapshot_topic("edge", "box1", "cam1"), "edge/box1/cam1/snapshot"),
        (status_topic("edge", "box1"), "edge/box1/status"),
        (stats_topic("edge", "box1"), "edge/box1/stats"),
        (tags_filter(), "edge/+/+/tags"),  # everything
        (tags_filter("edge", "box1"), "edge/box1/+/tags"),  # one device, any camera
        (tags_filter("edge", "+", "cam1"), "edge/+/cam1/tags"),  # one camera id on any device
    ],
)
def test_topic_names(topic: str, expected: str) -> None:
    assert topic == expected


@pytest.mark.parametrize(
    ("prefix", "device", "camera"),
    [
        ("edge", "box/1", "cam1"),  # '/' would add a level
        ("edge", "box1", "+"),  # wildcards are for filters only
        ("edge", "#", "cam1"),
        ("edge", "", "cam1"),  # empty level
        ("/edge", "box1", "cam1"),  # leading '/'
        ("edge/", "box1", "cam1"),  # trailing '/'
        ("ed+ge", "box1", "cam1"),  # wildcard in the prefix
        ("", "box1", "cam1"),  # empty prefix
    ],
)
def test_bad_levels_are_rejected(prefix: str, device: str, camera: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        tags_topic(prefix, device, camera)


def test_filters_refuse_multi_level_wildcards() -> None:
    with pytest.raises(ValueError, match="'#'"):
        tags_filter("edge", "box1", "#")


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("edge/box1/cam1/tags", TagsTopic("edge", "box1", "cam1")),
        ("plant1/line3/box1/cam1/tags", TagsTopic("plant1/line3", "box1", "cam1")),  # prefix keeps its levels
    ],
)
def test_parse_tags_topic(topic: str, expected: TagsTopic) -> None:
    assert parse_tags_topic(topic) == expected
    assert tags_topic(*expected) == topic  # round trip


@pytest.mark.parametrize(
    "topic",
    [
        "edge/box1/status",  # not a tags topic
        "edge/box1/cam1/snapshot",
        "box1/cam1/tags",  # no prefix
        "edge//cam1/tags",  # empty device
        "edge/box1/+/tags",  # a filter, not a topic
    ],
)
def test_parse_rejects_other_topics(topic: str) -> None:
    with pytest.raises(ValueError, match="not a tags topic"):
        parse_tags_topic(topic)
