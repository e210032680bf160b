"""What an MQTT 5 broker announces in its CONNACK, and the size of a PUBLISH packet.

MQTT 5 (§3.2.2.3) lets the server announce its limits as CONNACK properties:
Maximum Packet Size (the client must never send a larger packet, §3.1.2.11.4),
Receive Maximum (unacknowledged QoS 1/2 publishes it accepts at once), Maximum
QoS, Retain Available, Topic Alias Maximum and Server Keep Alive. An absent
property means "no limit" (or, for Receive Maximum, 65,535). An MQTT 3.1.1 broker
announces nothing: :data:`UNANNOUNCED` stands for that.

How the publisher honours them. On an MQTT 5 connection the CONNACK's properties become
:attr:`~agent.publish.mqtt_publisher.MqttPublisher.limits` , logged once at INFO
when they change. Receive Maximum caps paho's in-flight window; a broker with
Maximum QoS 0 gets QoS 0 publishes, one without retained messages an unretained
status, each with a warning at start-up saying what that costs (a CONNACK that
refuses the last will's QoS or retain flag makes the next attempt send a will it
accepts). Its ``oversize`` says whether a message would exceed the
Maximum Packet Size (the caller must then not send it); a status document that
does not fit is trimmed. Refused PUBACKs are logged at most once a minute per
reason code.

Pure: no I/O. ``publish_packet_size`` counts the bytes paho writes for one QoS 1
PUBLISH, so a packet the broker would refuse is caught before it is sent.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

MAX_VARINT = 268_435_455  # the largest Remaining Length MQTT can encode


@dataclasses.dataclass(frozen=True)
class BrokerLimits:
    announced: bool  # False: an MQTT 3.1.1 connection (or none yet): nothing is known
    max_packet_size: int | None = None  # bytes, whole packet; None = no limit announced
    receive_maximum: int = 65_535
    maximum_qos: int = 2
    retain_available: bool = True
    topic_alias_maximum: int = 0
    server_keep_alive: int | None = None  # seconds, when the broker overrode ours

    @classmethod
    def from_connack(cls, properties: Any) -> BrokerLimits:
        """From paho's CONNACK ``Properties`` (None or an object without a property = not announced)."""
        def get(name: str) -> Any:
            return getattr(properties, name, None) if properties is not None else None

        return cls(
            announced=True,
            max_packet_size=get("MaximumPacketSize"),
            receive_maximum=get("ReceiveMaximum") or 65_535,
            maximum_qos=2 if get("MaximumQoS") is None else int(get("MaximumQoS")),
            retain_available=get("RetainAvailable") is None or bool(get("RetainAvailable")),
            topic_alias_maximum=get("TopicAliasMaximum") or 0,
            server_keep_alive=get("ServerKeepAlive"),
        )

    def describe(self) -> str:
        """One line for the log and ``doctor``."""
        if not self.announced:
            return "none announced (MQTT 3.1.1: the broker's limits are unknown to the agent)"
        size = "no limit" if self.max_packet_size is None else f"{self.max_packet_size} bytes"
        keep = "" if self.server_keep_alive is None else f", server keep alive {self.server_keep_alive} s"
        return (f"maximum packet size {size}, receive maximum {self.receive_maximum}, maximum QoS "
                f"{self.maximum_qos}, retain {'available' if self.retain_available else 'NOT available'}, "
                f"topic alias maximum {self.topic_alias_maximum}{keep}")

    def costs(self) -> list[str]:
        """What the announced limits cost this agent, in words (empty when nothing)."""
        out = []
        if self.maximum_qos == 0:
            out.append("the broker allows QoS 0 only: events are sent without acknowledgement, so an event "
                       "lost on the way (a broken connection) is not noticed nor sent again (no delivery "
                       "guarantee); rows leave the outbox once written to the socket")
        if not self.retain_available:
            out.append("the broker has no retained messages: the device status is published unretained, so "
                       "a consumer that subscribes later does not see it, and the last will 'offline' is not "
                       "kept either")
        return out


UNANNOUNCED = BrokerLimits(announced=False)


def _varint_len(n: int) -> int:
    size = 1
    while n >= 128:
        n //= 128
        size += 1
    return size


def publish_packet_size(topic: str, payload_len: int, properties_len: int, qos: int = 1) -> int:
    """Bytes of one PUBLISH packet: fixed header + topic + packet id (QoS > 0) + properties + payload.

    ``properties_len`` is the length of the packed properties *including* their own length
    prefix (``len(Properties.pack())``; 0 for MQTT 3.1.1, which has none).
    """
    remaining = 2 + len(topic.encode("utf-8")) + (2 if qos > 0 else 0) + properties_len + payload_len
    return 1 + _varint_len(remaining) + remaining


class LogThrottle:
    """At most one log line per key per ``interval_s``: the first occurrence is logged at once; later ones
    are counted and reported together ("... and N more") on the first occurrence after the interval.

    So a cause that repeats at frame rate for a minute costs at most ``1 + 60 / interval_s`` lines.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self._log = logger
        self._interval = interval_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` was logged within the interval. True when logged."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            more = self._suppressed.pop(key, 0)
        suffix = f" ({more} more like this in the last {now - last:.0f} s)" if more and last is not None else ""
        self._log.warning(msg + "%s", *args, suffix)
        return True
