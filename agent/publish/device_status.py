"""The device's retained status document and its last will, as :class:`~agent.publish.mqtt_publisher.MqttPublisher`
publishes them on ``<prefix>/<device>/status`` (``proto/mqtt/status.v1.schema.json``). Pure: what the documents
say and how one is trimmed to the broker's packet limit; the publisher sends them."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable
from typing import Any

from paho.mqtt.reasoncodes import ReasonCode

from agent.core.event import rfc3339
from agent.publish.limits import LogThrottle

_REQUIRED = ("state", "device", "since", "version", "reason")


def now_rfc3339() -> str:
    return rfc3339(datetime.datetime.now(datetime.timezone.utc))


class DeviceStatus:
    """What the status says: ``online`` (with every extra provider's fields), ``offline`` on shutdown, and the last
    will (``offline``, ``connection lost``) with the QoS and retain flag the broker takes."""

    def __init__(self, device: str, version: str, log: logging.Logger) -> None:
        self.device = device
        self.version = version
        self.online_since: str | None = None
        self.will_qos, self.will_retain = 1, True
        self._extras: list[Callable[[], dict[str, Any]]] = []
        self._log = log
        self._throttle = LogThrottle(log)

    def add_extra(self, provider: Callable[[], dict[str, Any]]) -> None:
        self._extras.append(provider)

    def online(self) -> dict[str, Any]:
        status: dict[str, Any] = {"state": "online", "device": self.device,
                                  "since": self.online_since or now_rfc3339(), "version": self.version}
        for provider in self._extras:
            status.update(provider())
        return status

    def offline(self) -> dict[str, Any]:
        return {"state": "offline", "device": self.device, "reason": "shutdown", "since": now_rfc3339()}

    def will(self) -> str:
        return json.dumps({"state": "offline", "device": self.device, "reason": "connection lost"},
                          separators=(",", ":"))

    def adapt_will(self, reason_code: ReasonCode, broker: str) -> bool:
        """A CONNACK refusing the will's QoS (0x9B) or retain flag (0x9A): True when the will changed so that the
        broker takes it next time (send it again)."""
        if reason_code.value == 0x9B and self.will_qos:
            self.will_qos = 0
        elif reason_code.value == 0x9A and self.will_retain:
            self.will_retain = False
        else:
            return False
        self._log.warning("broker %s refused the last will (%s); the next attempt sends it with QoS %d, %s",
                          broker, reason_code, self.will_qos, "retained" if self.will_retain else "not retained")
        return True

    def payload(self, status: dict[str, Any], oversize: Callable[[int], int | None],
                max_packet_size: int | None) -> bytes | None:
        """The status as JSON, trimmed to fit the broker's packet limit (``oversize(payload length)``: the packet's
        size when too large, else None): without the cameras first, then without the outbox counters but the dead
        letters' causes, then the required fields only. None (logged) when not even that fits."""
        trimmed = [status, {k: v for k, v in status.items() if k != "cameras"},
                   {k: v for k, v in status.items()
                    if k in (*_REQUIRED, "outbox_dead_letters", "outbox_dead_letter_causes")},
                   {k: v for k, v in status.items() if k in _REQUIRED}]
        size = None
        for doc in trimmed:
            payload = json.dumps(doc, separators=(",", ":")).encode("utf-8")
            size = oversize(len(payload))
            if size is None:
                if doc is not status:
                    self._throttle.warning("status-trimmed", "the status document does not fit the broker's "
                                           "maximum packet size of %s bytes; published a shorter one without %s",
                                           max_packet_size, ", ".join(sorted(set(status) - set(doc))))
                return payload
        self._throttle.warning("status-too-large", "the status %r (%d bytes even trimmed) does not fit the broker's "
                               "maximum packet size of %s bytes; not published", status.get("state"), size,
                               max_packet_size)
        return None
