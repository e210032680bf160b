"""The service with a taxonomy: published tags carry canonical labels; the stats count unmapped words."""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable

from agent.config.models import AgentConfig, CameraConfig, MqttConfig
from agent.publish.local_broker import LocalMosquitto
from agent.publish.schema import validate_payload
from agent.runtime.service import AgentService
from agent.taxonomy import Taxonomy, TaxonomyFile
from tests.conftest import MqttCollector

FRAMES = 150
# maps one of the shipped model's classes (the scene shows holes and missing pieces); the others stay unmapped
TAXONOMY = Taxonomy.from_file(TaxonomyFile.model_validate({"labels": [
    {"label": "HOLE", "code": "D-203", "severity": "high", "synonyms": ["puncture"]}]}))


def test_published_tags_carry_canonical_labels_and_the_stats_count_unmapped_words(
    mosquitto: LocalMosquitto, collector: Callable[..., MqttCollector]
) -> None:
    sub = collector(mosquitto.url, "edge/box1/+/tags")
    cfg = AgentConfig(device_id="box1", mqtt=MqttConfig(url=mosquitto.url), cameras=[
        CameraConfig(id="belt", source=f"synthetic://conveyor?seed=11&fps=0&frames={FRAMES}")]).with_taxonomy(TAXONOMY)
    service = AgentService(cfg)
    service.start()
    try:
        assert service.publisher.wait_connected(10.0), "publisher did not connect"
        service.wait(threading.Event(), duration=60.0)
        assert service.loop is not None and service.loop.finished, "the source did not end in time"
        stats = service.stats_document()
    finally:
        service.shutdown(timeout=10.0)

    payloads = [json.loads(m.payload) for m in sub.wait_for(FRAMES, timeout=10.0)]
    assert len(payloads) == FRAMES
    expected: collections.Counter[str] = collections.Counter()
    tags = mapped_tags = 0
    for payload in payloads:
        assert validate_payload(payload) == [], payload
        unmapped = set()
        for tag in payload["tags"]:
            tags += 1
            mapped = TAXONOMY.map(tag["label"])
            if mapped is None:
                assert (tag["canonical"], tag["code"], tag["severity"]) == (None, None, None)
                unmapped.add(tag["label"])
            else:
                mapped_tags += 1
                assert (tag["canonical"], tag["code"], tag["severity"]) == (
                    mapped.canonical, mapped.code, mapped.severity)
        expected.update(unmapped)  # a word counts once per event
    assert mapped_tags > 0 and expected, (mapped_tags, expected)  # both kinds seen
    assert stats["unmapped"] == dict(expected)
    assert json.dumps(stats)  # the stats document stays JSON
