"""The inference loop's hook into the audit images (:mod:`agent.outputs.images`) and the snapshots: before a
frame's event is published, the image keeper queues its image and the event gains ``image``; with
``images.reuse_snapshot`` a snapshot rendered for the frame is kept as its image, so the frame is encoded once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from agent.core.event import TagEvent
from agent.core.inspection import Inspection
from agent.core.ports import Publisher
from agent.outputs.images.keeper import ImageKeeper
from agent.publish.snapshot import SnapshotSender
from agent.runtime.fanout import EventFanout

__all__ = ["Rendered", "attach_images", "keep_image", "send_snapshot"]


@dataclasses.dataclass(frozen=True)
class Rendered:
    """A snapshot rendered for the frame before its event was published."""

    jpeg: bytes | None  # None: too large for snapshots.max_bytes (counted by the sender)


def keep_image(images: ImageKeeper | None, snapshots: SnapshotSender | None,
               inspection: Inspection) -> tuple[TagEvent, Rendered | None]:
    """The event to publish (naming its image when it is kept) and the snapshot rendered for it, if any."""
    if images is None or not images.wants(inspection):
        return inspection.event, None
    rendered = None
    if images.config.reuse_snapshot and snapshots is not None and snapshots.wants(inspection.decision.verdict):
        rendered = Rendered(snapshots.render(inspection.event.event_id, inspection.frame.image, inspection.decision,
                                             inspection.zones))
    return images.keep(inspection, rendered.jpeg if rendered is not None else None), rendered


def send_snapshot(snapshots: SnapshotSender | None, inspection: Inspection, rendered: Rendered | None) -> None:
    """The frame's snapshot, if the config asks for one (rendered now unless it already was)."""
    if snapshots is None:
        return
    frame = inspection.frame
    if rendered is None:
        snapshots.send(frame.camera_id, inspection.event.event_id, frame.image, inspection.decision,
                       inspection.zones)
    elif rendered.jpeg is not None:
        snapshots.deliver(frame.camera_id, inspection.event.event_id, rendered.jpeg)


def attach_images(images: ImageKeeper | None, events: EventFanout, publisher: Publisher,
                  republish: Callable[[], None]) -> None:
    """The keeper hears of every published event (an escalated answer goes into its index), and its state is in
    the retained status (republished when the disk turns full or has room again)."""
    if images is None:
        return
    events.add(images)
    publisher.add_status_extra(images.status_fields)
    images.on_change = republish
