"""The largest MQTT packets a config can make, for ``doctor`` to hold against the broker's limits.

A tag event is measured, not guessed: one is built with ``model.max_detections`` boxes (each an
uncertain detection with a 32-character label) and an escalation answer with a 1,000-character
description (the VLM's prose has no hard bound: an estimate). A snapshot is at most
``snapshots.max_bytes``; the status document holds every camera in a state with a 200-character reason.
"""

from __future__ import annotations

import datetime
import json

from agent.config.models import AgentConfig
from agent.core.decision import TriageDecision, TriagedTag
from agent.core.detections import Detection
from agent.core.event import EscalationOutcome, build_event
from agent.publish.limits import publish_packet_size
from agent.publish.topics import snapshot_topic, status_topic, tags_topic

_LABEL = "x" * 32
_UUID_LEN = 36


def _props(content_type: str, event_id: bool) -> int:
    n = 3 + len(content_type) + (1 + 2 + len("event_id") + 2 + _UUID_LEN if event_id else 0)
    return (1 if n < 128 else 2) + n


def largest_messages(config: AgentConfig) -> list[tuple[str, int]]:
    """(what, PUBLISH packet bytes) for the tag event, the status and, when enabled, the snapshot."""
    prefix, device = config.mqtt.topic_prefix, config.device_id
    camera = max((c.id for c in config.cameras), key=len, default="cam1")
    n = config.model.max_detections
    detections = [Detection(_LABEL, i, 0.45, (1000.5, 1000.5, 1999.5, 1999.5)) for i in range(n)]
    decision = TriageDecision("uncertain", tuple(TriagedTag(d, "uncertain") for d in detections))  # all in the band
    answer = EscalationOutcome("answered", None, "x" * 40, 99999.9, "x" * 1000)
    event = build_event(device=device, camera=camera, sequence=2**31, captured_at=datetime.datetime.now(
        datetime.timezone.utc), frame_width=8192, frame_height=8192, decision=decision, model_id="x" * 64,
        prefilter_latency_ms=99999.9, escalation=answer)
    v5 = config.mqtt.protocol == "5"
    out = [(f"tag event ({n} detections)", publish_packet_size(
        tags_topic(prefix, device, camera), len(event.to_json()), _props("application/json", False) if v5 else 0))]
    status = {"state": "online", "device": device, "since": "2026-01-01T00:00:00.000000Z", "version": "x" * 20,
              "outbox_pending": 10**6, "outbox_evicted": 10**6,
              "cameras": {c.id: {"state": "reconnecting", "reason": "x" * 200, "since": "2026-01-01T00:00:00Z"}
                          for c in config.cameras}}
    out.append(("status", publish_packet_size(status_topic(prefix, device), len(json.dumps(status)),
                                              _props("application/json", False) if v5 else 0)))
    if config.snapshots.enabled:
        out.append(("snapshot", publish_packet_size(snapshot_topic(prefix, device, camera), config.snapshots.max_bytes,
                                                    _props("image/jpeg", True) if v5 else 0)))
    return out
