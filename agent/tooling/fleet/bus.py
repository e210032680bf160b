"""One MQTT session for fleet messages (paho, MQTT 5, its network thread): subscribe, publish at QoS 1 with
every return code checked, and a queue of what arrived. Both ends use it: ``fleet serve`` on a box and the
operator's ``fleet rollout``. Subscriptions are made again after a reconnect."""

from __future__ import annotations

import dataclasses
import logging
import queue
import ssl
import threading
import time
import urllib.parse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import PublishError
from agent.publish.mqtt_publisher import route_paho_log

__all__ = ["FleetBus", "Message"]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    received: float  # time.time() when it arrived (a command's age is judged from then, not when it is taken)


class FleetBus:
    """Connect with :meth:`open`; messages on the subscribed topics land in :attr:`inbox`."""

    def __init__(self, url: str, client_id: str, username: str | None = None, password: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)
        self.inbox: queue.Queue[Message] = queue.Queue(maxsize=10000)  # full: the newest is dropped, logged
        self._topics: list[str] = []
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        route_paho_log(self._client, _log.getChild("paho"))
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        if username is not None:
            self._client.username_pw_set(username, password)
        if parsed.scheme == "mqtts":
            self._client.tls_set_context(ssl.create_default_context())

    def open(self, topics: list[str], timeout_s: float = 10.0) -> None:
        """Connect and subscribe to ``topics``; PublishError when the broker cannot be reached or refuses."""
        self._topics = list(topics)
        try:
            self._client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise PublishError(f"cannot connect to broker {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout_s) or not self._subscribed.wait(timeout_s):
            self.close()
            raise PublishError(self._refused or f"broker {self.host}:{self.port} did not accept the connection and "
                               f"the subscription within {timeout_s:g} s")

    def publish(self, topic: str, payload: bytes, timeout_s: float = 10.0) -> None:
        """Publish at QoS 1 and wait for the PUBACK; PublishError when the broker did not take it."""
        info = self._client.publish(topic, payload, qos=1, retain=False)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise PublishError(f"cannot publish to {topic}: {mqtt.error_string(info.rc)}")
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise PublishError(f"publishing to {topic} failed: {exc}") from exc
        if not info.is_published():
            raise PublishError(f"broker {self.host}:{self.port} did not acknowledge the message to {topic} within "
                               f"{timeout_s:g} s")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                    _props: Properties | None) -> None:
        if reason.is_failure:
            self._refused = f"broker {self.host}:{self.port} refused the connection: {reason}"
            return
        self._connected.set()
        if self._topics:
            client.subscribe([(t, 1) for t in self._topics])

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, _mid: int, reasons: list[ReasonCode],
                      _props: Properties | None) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self._refused = f"broker {self.host}:{self.port} refused the subscription to the fleet topics: " + \
                ", ".join(failed)
            return
        self._subscribed.set()

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self.inbox.put_nowait(Message(msg.topic, bytes(msg.payload), time.time()))
        except queue.Full:
            _log.warning("fleet inbox full; dropped a message on %s", msg.topic)
