"""The agent's metrics: what ``/metrics`` exposes, read at scrape time from the snapshot the runtime produces
(:class:`agent.ops.snapshot.AgentSnapshot`), never from the service.

Counters come from where they are kept anyway: each grabber's :class:`GrabberStats`, the inference loop's
counters, the outbox/MQTT publisher's stats, and :class:`EventMetrics`, a listener of the runtime's event
fan-out that hears of every tag event the publisher took (so verdicts, escalation statuses and the stage
latencies are counted once per published event, whichever thread publishes it).

Metric names (all prefixed ``edge_agent_``) are listed in :data:`METRICS` and in docs/metrics.md.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading

from agent.capture.grabber import STATES
from agent.core.event import TagEvent
from agent.core.ports import Published
from agent.escalation.sampler import FATES
from agent.ops.exposition import Family, MetricType, render
from agent.ops.histogram import LATENCY_BUCKETS_S, LabelledHistograms
from agent.ops.snapshot import AgentSnapshot, EventCounts
from agent.ops.stages import HealthReport
from agent.taxonomy.model import normalise

log = logging.getLogger(__name__)

__all__ = ["METRICS", "EventMetrics", "STAGES", "agent_families", "render_agent_metrics"]

STAGES = ("prefilter", "publish", "escalation")
"""Labels of ``edge_agent_stage_duration_seconds``: prefilter (pre-process + inference + decode, per
frame), publish (committing the event to the outbox), escalation (the VLM round trip, answered calls)."""

METRICS: dict[str, str] = {
    "edge_agent_info": "Agent version and device id (value 1)",
    "edge_agent_model_info": "The prefilter model: id, task, precision, INT8 gate state, active providers (value 1)",
    "edge_agent_uptime_seconds": "Seconds since the service started",
    "edge_agent_ready": "1 once start-up finished (READY=1 sent to systemd)",
    "edge_agent_healthy": "1 while /healthz answers 200 (every stage making progress, no camera failed)",
    "edge_agent_stage_busy_seconds": "How long each stage has been busy with its current work (stuck when above "
                                     "its window)",
    "edge_agent_camera_state": "1 for the camera's current state (connecting, online, reconnecting, ended, "
                               "failed, stopped), 0 for the others",
    "edge_agent_frames_read_total": "Frames read from the camera (corrupt and dropped ones included)",
    "edge_agent_frames_dropped_total": "Frames read but not inspected: stale (a newer frame replaced it) or "
                                       "fps_limit (above cameras[].fps)",
    "edge_agent_frames_corrupt_total": "Frames that could not be decoded (skipped)",
    "edge_agent_frames_inspected_total": "Frames the prefilter inspected",
    "edge_agent_camera_reconnects_total": "Attempts to re-open the camera after it failed",
    "edge_agent_events_total": "Tag events committed to the outbox, by verdict and by who decided it",
    "edge_agent_event_updates_total": "Revised tag events (a late VLM answer published as revision 2 or more)",
    "edge_agent_escalations_total": "Escalation status of each tag event (not_needed, answered, timeout, ...)",
    "edge_agent_stage_duration_seconds": "Latency of the prefilter, the outbox commit and the escalation",
    "edge_agent_outbox_pending_events": "Events in the outbox not yet acknowledged by the broker",
    "edge_agent_outbox_pending_bytes": "Bytes of the events in the outbox",
    "edge_agent_outbox_committed_total": "Events committed to the outbox",
    "edge_agent_outbox_acked_total": "Outbox rows acknowledged by the broker (PUBACK) and deleted",
    "edge_agent_outbox_evicted_total": "Events evicted unsent because the outbox was full",
    "edge_agent_outbox_dead_letters": "Messages in the outbox's dead letters (too large for the broker, or refused "
    "after the stated tries); see `edge-agent outbox show`",
    "edge_agent_outbox_dead_lettered_total": "Messages moved to the dead letters by this process",
    "edge_agent_snapshots_shrunk_total": "Snapshots re-encoded smaller to fit the broker's maximum packet size",
    "edge_agent_snapshots_too_large_total": "Snapshots dropped: larger than the broker's maximum packet size even "
    "re-encoded smaller",
    "edge_agent_outbox_redelivered_total": "Rows sent again after a restart (possible duplicates downstream)",
    "edge_agent_outbox_resent_total": "Rows resent after a reconnect (possible duplicates downstream)",
    "edge_agent_outbox_refused_total": "PUBACKs with a failure code (rows kept and retried)",
    "edge_agent_mqtt_connected": "1 while connected to the MQTT broker",
    "edge_agent_mqtt_connects_total": "Successful connections to the broker (more than 1 means reconnects)",
    "edge_agent_mqtt_inflight": "Messages sent and not yet acknowledged",
    "edge_agent_dataset_recorded_total": "Frames the dataset recorder wrote, by kind (escalated, confident_sample)",
    "edge_agent_dataset_dropped_total": "Frames the dataset recorder did not write, by reason (queue_full, "
                                        "pending_full, model_changed)",
    "edge_agent_dataset_evicted_total": "Recorded frames deleted to stay within dataset.max_frames/max_bytes",
    "edge_agent_dataset_frames": "Recorded frames on disk",
    "edge_agent_dataset_bytes": "Bytes of the recorded frames on disk",
    "edge_agent_images_kept_total": "Audit images written (images:), by the verdict they were kept for",
    "edge_agent_images_dropped_total": "Audit images not queued, by reason (queue_full: the event went without "
                                       "image; update_queue_full: the index kept the first revision)",
    "edge_agent_images_failed_total": "Audit images queued but not written, by reason (no_space, low_space: under "
                                      "images.min_free_bytes, error)",
    "edge_agent_images_evicted_total": "Audit images deleted to stay within a camera's limits, by reason (size, age)",
    "edge_agent_images_stored": "Audit images on disk, per camera",
    "edge_agent_images_bytes": "Bytes of the audit images on disk, per camera",
    "edge_agent_images_queued": "Frames waiting for the images writer",
    "edge_agent_images_disk_full": "1 while the last image could not be written for lack of space (see /healthz)",
    "edge_agent_learn_frames_total": "Learn mode (no prefilter): each frame of a learning camera by its fate "
                                     "(sampled_schedule, sampled_scene_change, skipped_rate, skipped_unchanged; "
                                     "skipped frames are not published)",
    "edge_agent_learn_outcomes_total": "Learn mode: the sampled frames by the escalation status they were "
                                       "published with (answered, cached, unavailable, timeout, ...)",
    "edge_agent_plc_connected": "1 while the agent is connected to the PLC (plc.connections)",
    "edge_agent_plc_connects_total": "Connections made to the PLC (more than 1 means reconnects)",
    "edge_agent_plc_triggers_total": "Handshake triggers the agent took from the PLC",
    "edge_agent_plc_results_total": "Results to the PLC by outcome: written, unwritten (refused, or the PLC went "
                                    "away mid-handshake), dropped (the queue was full), late (after its trigger "
                                    "timed out)",
    "edge_agent_plc_errors_total": "Error codes written to the PLC (or owed while it was away), by name",
    "edge_agent_plc_trigger_to_result_seconds": "Trigger seen -> result_ready written, p50 and p99 of the last "
                                                "2000 parts",
}



# Distinct unmapped words kept by name; later new ones are counted together under OTHER_UNMAPPED.
MAX_UNMAPPED_WORDS = 500
OTHER_UNMAPPED = "(other words)"

class EventMetrics:
    """A listener of the runtime's event fan-out (``agent.runtime.fanout``): counts every tag event the
    publisher took by camera, verdict and escalation status, and observes the stage latencies (``publish``:
    the publisher's call, as the fan-out timed it)."""

    def __init__(self) -> None:
        self.latency = LabelledHistograms(LATENCY_BUCKETS_S, preset=STAGES)
        self._lock = threading.Lock()
        self.events: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.updates: collections.Counter[tuple[str, str]] = collections.Counter()
        self.escalations: collections.Counter[str] = collections.Counter()
        self.unmapped: collections.Counter[str] = collections.Counter()
        """Events per raw word (normalised) the taxonomy does not map; a revision counts only its VLM words."""

    def on_published(self, published: Published) -> None:
        event = published.event
        self.latency.observe("publish", published.seconds)
        with self._lock:
            if event.revision > 1:
                self.updates[(event.camera, event.verdict)] += 1
            else:
                self.events[(event.camera, event.verdict, event.decided_by)] += 1
                self.escalations[event.escalation.status] += 1
        if event.revision <= 1:
            self.latency.observe("prefilter", event.prefilter_latency_ms / 1000.0)
        self._count_unmapped(event)
        if event.escalation.latency_ms is not None:
            self.latency.observe("escalation", event.escalation.latency_ms / 1000.0)

    def _count_unmapped(self, event: TagEvent) -> None:
        """Count the event's words the taxonomy does not map (the prefilter's were counted with revision 1);
        log each word the first time it is seen."""
        words = event.unmapped_labels(vlm_only=event.revision > 1)
        if not words:
            return
        new: list[str] = []
        with self._lock:
            for word in words:
                key = normalise(word)
                if key not in self.unmapped:
                    if len(self.unmapped) >= MAX_UNMAPPED_WORDS:
                        key = OTHER_UNMAPPED  # a VLM's free words never end: the memory for them does
                    else:
                        new.append(word)
                self.unmapped[key] += 1
        for word in new:
            log.warning("taxonomy: %r is not in the taxonomy %s; the tag keeps its raw label (canonical null). "
                        "Add it as a synonym of a label to map it", word,
                        event.taxonomy.source if event.taxonomy is not None else "")

    def unmapped_counts(self) -> dict[str, int]:
        """Events per unmapped word, most frequent first."""
        with self._lock:
            return dict(self.unmapped.most_common())

    def counts(self) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], int], dict[str, int]]:
        with self._lock:
            return dict(self.events), dict(self.updates), dict(self.escalations)

    def snapshot(self) -> EventCounts:
        """The counts and the stage latencies now."""
        events, updates, escalations = self.counts()
        return EventCounts(events, updates, escalations, self.latency.snapshots())


def _family(name: str, kind: MetricType) -> Family:
    return Family(name, kind, METRICS[name])


def agent_families(s: AgentSnapshot, report: HealthReport | None, ready: bool) -> list[Family]:
    """Every metric family of the agent in snapshot ``s``. ``report`` is the current stage health (None before
    start)."""
    from agent.core.version import agent_version

    fams: list[Family] = []
    fams.append(_family("edge_agent_info", "gauge").add(1, device=s.device_id, version=agent_version()))
    facts = s.model
    if facts is not None:
        fams.append(_family("edge_agent_model_info", "gauge").add(
            1, model=facts.model_id, task=facts.task, precision=facts.precision, gate=facts.gate,
            providers=",".join(facts.providers)))
    fams.append(_family("edge_agent_uptime_seconds", "gauge").add(round(s.uptime_s, 3)))
    fams.append(_family("edge_agent_ready", "gauge").add(1 if ready else 0))
    fams.append(_family("edge_agent_healthy", "gauge").add(1 if ready and report is not None and report.healthy
                                                           else 0))
    busy = _family("edge_agent_stage_busy_seconds", "gauge")
    if report is not None:
        for progress in report.stages:
            busy.add(round(progress.busy_for(report.now), 3), stage=progress.name)
    fams.append(busy)
    fams += _camera_families(s)
    if s.publisher is not None:  # started: the events are counted
        fams += _event_families(s.events)
    else:
        fams += [_family(name, kind) for name, kind in _EVENT_FAMILIES]
    fams += _publisher_families(s)
    fams += _dataset_families(s)
    fams += _image_families(s)
    fams += _learn_families(s)
    fams += _plc_families(s)
    return fams


def _camera_families(s: AgentSnapshot) -> list[Family]:
    state = _family("edge_agent_camera_state", "gauge")
    read = _family("edge_agent_frames_read_total", "counter")
    dropped = _family("edge_agent_frames_dropped_total", "counter")
    corrupt = _family("edge_agent_frames_corrupt_total", "counter")
    inspected = _family("edge_agent_frames_inspected_total", "counter")
    reconnects = _family("edge_agent_camera_reconnects_total", "counter")
    counted = s.progress.loop.inspected if s.progress.loop is not None else {}
    for st in (c.stats for c in s.progress.cameras):
        cam = st.camera_id
        for name in STATES:
            state.add(1 if st.state == name else 0, camera=cam, state=name)
        read.add(st.frames_read, camera=cam)
        dropped.add(st.dropped - st.skipped_fps, camera=cam, reason="stale")
        dropped.add(st.skipped_fps, camera=cam, reason="fps_limit")
        corrupt.add(st.corrupt, camera=cam)
        inspected.add(counted.get(cam, 0), camera=cam)
        reconnects.add(st.reconnects, camera=cam)
    return [state, read, dropped, corrupt, inspected, reconnects]


_EVENT_FAMILIES: tuple[tuple[str, MetricType], ...] = (
    ("edge_agent_events_total", "counter"), ("edge_agent_event_updates_total", "counter"),
    ("edge_agent_escalations_total", "counter"), ("edge_agent_stage_duration_seconds", "histogram"))


def _event_families(counts: EventCounts) -> list[Family]:
    events, updates, escalations, durations = (_family(name, kind) for name, kind in _EVENT_FAMILIES)
    for (cam, verdict, decided_by), n in sorted(counts.events.items()):
        events.add(n, camera=cam, verdict=verdict, decided_by=decided_by)
    for (cam, verdict), n in sorted(counts.updates.items()):
        updates.add(n, camera=cam, verdict=verdict)
    for status, n in sorted(counts.escalations.items()):
        escalations.add(n, status=status)
    for stage, snap in counts.latency.items():
        durations.add_histogram(snap, stage=stage)
    return [events, updates, escalations, durations]


def _learn_families(s: AgentSnapshot) -> list[Family]:
    """Learn mode's counts per learning camera (families without samples while no camera learns)."""
    fates = _family("edge_agent_learn_frames_total", "counter")
    outcomes = _family("edge_agent_learn_outcomes_total", "counter")
    for camera, counts in sorted(s.learn.items()):
        for key, n in sorted(counts.items()):
            if key in FATES:
                fates.add(n, camera=camera, fate=key)
            else:
                outcomes.add(n, camera=camera, status=key)
    return [fates, outcomes]


def _dataset_families(s: AgentSnapshot) -> list[Family]:
    """The dataset recorder's counters (families without samples while nothing records)."""
    recorded = _family("edge_agent_dataset_recorded_total", "counter")
    dropped = _family("edge_agent_dataset_dropped_total", "counter")
    evicted = _family("edge_agent_dataset_evicted_total", "counter")
    frames = _family("edge_agent_dataset_frames", "gauge")
    size = _family("edge_agent_dataset_bytes", "gauge")
    st = s.dataset
    if st is not None:
        for kind, n in sorted(st.recorded.items()):
            recorded.add(n, kind=kind)
        for reason, n in sorted(st.dropped.items()):
            dropped.add(n, reason=reason)
        evicted.add(st.evicted)
        frames.add(st.frames)
        size.add(st.bytes)
    return [recorded, dropped, evicted, frames, size]


def _plc_families(s: AgentSnapshot) -> list[Family]:
    """The PLC outputs' counters (families without samples when no camera writes to a PLC)."""
    connected = _family("edge_agent_plc_connected", "gauge")
    connects = _family("edge_agent_plc_connects_total", "counter")
    triggers = _family("edge_agent_plc_triggers_total", "counter")
    results = _family("edge_agent_plc_results_total", "counter")
    errors = _family("edge_agent_plc_errors_total", "counter")
    latency = _family("edge_agent_plc_trigger_to_result_seconds", "gauge")
    plc = s.plc
    for name, conn in sorted((plc.connections if plc is not None else {}).items()):
        connected.add(1 if conn["connected"] else 0, connection=name)
        connects.add(conn["connects"], connection=name)
    for cam in plc.cameras if plc is not None else ():
        if cam.mode == "handshake":
            triggers.add(cam.triggers, camera=cam.camera)
        for outcome, n in (("written", cam.results_written), ("unwritten", cam.results_unwritten),
                           ("dropped", cam.results_dropped), ("late", cam.late_results)):
            results.add(n, camera=cam.camera, outcome=outcome)
        for error, n in sorted(cam.errors.items()):
            errors.add(n, camera=cam.camera, error=error.lower())
        for quantile, ms in (("0.5", cam.latency_p50_ms), ("0.99", cam.latency_p99_ms)):
            if ms is not None:
                latency.add(ms / 1000.0, camera=cam.camera, quantile=quantile)
    return [connected, connects, triggers, results, errors, latency]


def _image_families(s: AgentSnapshot) -> list[Family]:
    """The audit images' counters (families without samples while no camera keeps images)."""
    by_label = (("edge_agent_images_kept_total", "verdict", "kept"), ("edge_agent_images_dropped_total", "reason",
                "dropped"), ("edge_agent_images_failed_total", "reason", "failed"),
                ("edge_agent_images_evicted_total", "reason", "evicted"), ("edge_agent_images_stored", "camera",
                "images"), ("edge_agent_images_bytes", "camera", "bytes"))
    out: list[Family] = []
    st = s.images
    for name, label, field in by_label:
        fam = _family(name, "counter" if name.endswith("_total") else "gauge")
        for key, n in sorted((getattr(st, field) if st is not None else {}).items()):
            fam.add(n, **{label: key})
        out.append(fam)
    queued, full = _family("edge_agent_images_queued", "gauge"), _family("edge_agent_images_disk_full", "gauge")
    if st is not None:
        queued.add(st.queued)
        full.add(1 if st.space_problem is not None else 0)
    return [*out, queued, full]


_PUBLISHER_SERIES: tuple[tuple[str, str, MetricType], ...] = (
    ("edge_agent_outbox_pending_events", "pending", "gauge"),
    ("edge_agent_outbox_pending_bytes", "pending_bytes", "gauge"),
    ("edge_agent_outbox_committed_total", "committed", "counter"),
    ("edge_agent_outbox_acked_total", "acked", "counter"),
    ("edge_agent_outbox_evicted_total", "evicted", "counter"),
    ("edge_agent_outbox_redelivered_total", "redelivered", "counter"),
    ("edge_agent_outbox_resent_total", "resent", "counter"),
    ("edge_agent_outbox_refused_total", "refused", "counter"),
    ("edge_agent_outbox_dead_letters", "dead_letters", "gauge"),
    ("edge_agent_outbox_dead_lettered_total", "dead_lettered", "counter"),
    ("edge_agent_snapshots_shrunk_total", "snapshots_shrunk", "counter"),
    ("edge_agent_snapshots_too_large_total", "snapshots_dropped", "counter"),
    ("edge_agent_mqtt_inflight", "inflight", "gauge"),
    ("edge_agent_mqtt_connected", "connected", "gauge"))
"""(metric, field of :class:`agent.core.ports.ReliableStats`, type)."""


def _publisher_families(s: AgentSnapshot) -> list[Family]:
    pub = s.publisher
    if pub is None:
        return []
    values = dataclasses.asdict(pub)
    out = [_family(name, kind).add(float(values[field])) for name, field, kind in _PUBLISHER_SERIES]
    out.append(_family("edge_agent_mqtt_connects_total", "counter").add(s.mqtt_connects))
    return out


def render_agent_metrics(s: AgentSnapshot, report: HealthReport | None, ready: bool) -> str:
    return render(agent_families(s, report, ready))
