"""Publish tag events to an MQTT broker with paho-mqtt 2.x (QoS 1).

``MqttPublisher`` owns one paho client and its network thread::

    pub = MqttPublisher(config.mqtt, config.device_id)
    pub.start()                      # never blocks; connects and reconnects forever
    pub.publish_event(event)         # from the pipeline thread; returns the MQTT mid
    pub.flush(5.0)                   # every published event acknowledged?
    pub.stop()                       # retained "offline", clean disconnect

Topics (see :mod:`agent.publish.topics`): events go to
``<prefix>/<device>/<camera>/tags``; ``<prefix>/<device>/status`` holds a
retained JSON state: ``online`` after every successful connect, ``offline``
with reason ``shutdown`` on :meth:`MqttPublisher.stop`, and ``offline`` with
reason ``connection lost`` from the broker (the last will) when the agent dies or
its connection breaks. The ``online`` document carries the fields of every
:meth:`MqttPublisher.add_status_extra` provider (outbox counters, each camera's
state) and is published again by :meth:`MqttPublisher.republish_status`; its
contract is ``proto/mqtt/status.v1.schema.json``.

Delivery. paho keeps QoS 1 messages in memory while the broker is away and sends
them after the next connect, so ``publish()`` returning ``MQTT_ERR_NO_CONN``
means *queued*, not lost. The in-memory queue is capped by
``MqttConfig.max_queued``; a publish beyond it (``MQTT_ERR_QUEUE_SIZE``) is
dropped, counted and logged with its event id. Acknowledgements are tracked by
message id in ``on_publish``: paho's ``MQTTMessageInfo.wait_for_publish()``
raises for a message first queued while disconnected, even after its delivery.
A PUBACK reason code is a failure only when ``is_failure`` (>= 128): 16, "No
matching subscribers", means the broker took the message. Nothing here survives
a process restart; the SQLite outbox does that.

Broker limits: see :mod:`agent.publish.limits`.

Threads. ``publish_event`` runs on the pipeline thread, paho's callbacks on its
network thread. paho calls ``on_publish`` while holding its own message lock, so
this class never holds its lock while calling into paho (no lock-order
inversion); the acknowledgements are kept in :mod:`agent.publish.acks`.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.models import MqttConfig
from agent.core.event import TagEvent
from agent.core.priority import yield_to_model
from agent.core.version import agent_version
from agent.errors import PublishError
from agent.publish.acks import AckLedger, Kind
from agent.publish.acks import PublisherStats as PublisherStats  # re-exported
from agent.publish.device_status import DeviceStatus, now_rfc3339
from agent.publish.limits import UNANNOUNCED, BrokerLimits, LogThrottle, publish_packet_size
from agent.publish.mqtt_connection import diagnose_connection as diagnose_connection  # re-exported (doctor)
from agent.publish.mqtt_connection import fixed_publish_properties, make_client, read_password
from agent.publish.mqtt_connection import route_paho_log as route_paho_log  # re-exported (tail)
from agent.publish.mqtt_connection import tls_context_for as tls_context_for  # re-exported (doctor)
from agent.publish.topics import status_topic, tags_topic

_log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"


AckListener = Callable[[str, ReasonCode], None]  # (tag, PUBACK reason code) for publish_raw messages


class MqttPublisher:
    """Tag events and the device's online/offline status over MQTT (paho-mqtt 2.x)."""

    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._config = config
        self._device = device_id
        self._prefix = config.topic_prefix
        self._status_topic = status_topic(self._prefix, device_id)
        self._v5 = config.protocol == "5"
        self._host = config.host
        self._port = config.port
        self.client_id = config.client_id or f"edge-agent-{device_id}"
        self._status = DeviceStatus(device_id, agent_version(), _log)

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified on acks, drops, (dis)connects
        self._acks = AckLedger(self._changed, self._settled)
        self._last_error: str | None = None
        self._connected = False
        self._connects = 0
        self._refusals = 0  # refusing CONNACKs so far
        self._refusals_reported = 0  # the ones wait_connected() has returned False for
        self._logged_errors: set[str] = set()  # errors logged since the last successful connect
        self._started = False
        self._stopped = False
        self._ack_listener: AckListener | None = None
        self._limits = UNANNOUNCED
        self._throttle = LogThrottle(_log)
        self._network_thread: int | None = None  # native id of paho's network thread, once it has yielded

        client, self._tls_context = make_client(config, self.client_id, _log, username, password, tls_context)
        self._last_diagnosis = -1e9
        self._diagnosis = "unknown reason"
        self._client = client
        self._set_will()
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish

    @classmethod
    def from_config(cls, config: MqttConfig, device_id: str) -> MqttPublisher:
        """Read the password file and build the TLS context the config names, with errors that
        name the field; then make the publisher."""
        return cls(config, device_id, username=config.username, password=read_password(config),
                   tls_context=tls_context_for(config))

    # -- public API -------------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return self._device

    @property
    def status_topic(self) -> str:
        return self._status_topic

    @property
    def limits(self) -> BrokerLimits:
        """What the broker announced in its last CONNACK (``announced`` False before one, or on MQTT 3.1.1)."""
        return self._limits

    def oversize(self, topic: str, payload_len: int, content_type: str = CONTENT_TYPE,
                 event_id: str | None = None) -> int | None:
        """The PUBLISH packet's size in bytes when it would exceed the broker's Maximum Packet Size, else None."""
        limit = self._limits.max_packet_size
        if limit is None:
            return None
        size = publish_packet_size(topic, payload_len, self._properties_len(content_type, event_id))
        return size if size > limit else None

    def _properties_len(self, content_type: str, event_id: str | None) -> int:
        if not self._v5:
            return 0
        n = 3 + len(content_type.encode("utf-8"))  # Content Type: id, length, string
        if event_id is not None:
            n += 1 + 2 + len("event_id") + 2 + len(event_id.encode("utf-8"))  # User Property: id, key, value
        return (1 if n < 128 else 2 if n < 16384 else 3) + n

    def start(self) -> None:
        """Connect in the background and keep reconnecting (1 s doubling to 30 s). Never blocks."""
        with self._lock:
            if self._stopped:
                raise PublishError("the MQTT publisher was stopped; create a new one")
            if self._started:
                return
            self._started = True
        _log.info("connecting to MQTT broker %s:%d as %s", self._host, self._port, self.client_id)
        if self._v5:
            # clean start off, with a session the broker keeps for session_expiry_s across outages
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self._config.session_expiry_s
            self._client.connect_async(self._host, self._port, keepalive=self._config.keepalive_s,
                                       clean_start=self._config.session_expiry_s == 0, properties=props)
        else:
            self._client.connect_async(self._host, self._port, keepalive=self._config.keepalive_s)
        rc = self._client.loop_start()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise PublishError(f"cannot start the MQTT network thread: {mqtt.error_string(rc)}")

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected. False on timeout, or as soon as the broker refuses the
        connection (see ``stats().last_error``; the publisher keeps retrying). Each refusal
        makes one call return early, so a retry loop around this call never spins."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._connected:
                if self._refusals > self._refusals_reported:
                    self._refusals_reported = self._refusals
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def publish_event(self, event: TagEvent) -> int:
        """Queue one event (QoS 1) and return its MQTT message id.

        Returns at once, connected or not: a message published while disconnected is
        kept in memory and sent after reconnecting. When the in-memory queue
        (``max_queued``) is full the event is dropped, counted and logged. Order is kept
        only while connected: paho sends the queued messages once a connection is up, and
        one published at that moment can overtake them (``ReliablePublisher`` sends only
        when connected, and keeps per-camera order across reconnects).
        """
        with self._lock:
            if self._stopped:
                raise PublishError(f"cannot publish event {event.event_id}: the MQTT publisher was stopped")
            self._acks.published += 1
        try:
            topic = tags_topic(self._prefix, event.device, event.camera)
            payload = event.to_json()
            size = self.oversize(topic, len(payload))
            if size is not None:  # MQTT 5: never send it (ReliablePublisher dead-letters such events instead)
                raise ValueError(f"{size} bytes as a packet, larger than the broker's maximum packet size of "
                                 f"{self._limits.max_packet_size} bytes")
            info = self._client.publish(
                topic, payload, qos=self._qos, retain=False, properties=self._properties(PacketTypes.PUBLISH)
            )
        except ValueError as exc:  # invalid topic, a payload over 256 MiB or over the broker's limit: not an outage
            self._acks.drop()
            raise PublishError(f"cannot publish event {event.event_id}: {exc}") from exc
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            dropped = self._acks.drop()
            _log.warning("dropped event %s (camera %s, sequence %d): the MQTT in-memory queue is full "
                         "(max_queued=%d, %d dropped so far)", event.event_id, event.camera, event.sequence,
                         self._config.max_queued, dropped)
            return info.mid
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            # paho stored the message before trying to send it: it stays queued and is resent.
            _log.warning("publishing event %s returned %s; it stays queued and will be resent", event.event_id,
                         mqtt.error_string(info.rc))
        self._acks.track(info.mid, "event", event.event_id)
        return info.mid

    def set_ack_listener(self, listener: AckListener) -> None:
        """``listener(tag, reason_code)`` is called on paho's thread when a :meth:`publish_raw` message is
        settled (``reason_code.is_failure``: the broker refused it). It must be quick."""
        self._ack_listener = listener

    def add_status_extra(self, provider: Callable[[], dict[str, Any]]) -> None:
        """Extra fields for the retained ``online`` status (outbox counters, cameras): every provider's
        fields are merged, in the order added. Providers run on whichever thread publishes the status
        (paho's on a connect): they must be quick and must not call into paho."""
        self._status.add_extra(provider)

    def publish_raw(self, topic: str, payload: bytes, tag: str, *, content_type: str = CONTENT_TYPE,
                    event_id: str | None = None) -> bool:
        """Queue one QoS 1 message whose settlement goes to the ack listener with ``tag``.
        False when paho's in-memory queue is full (nothing was queued; try again later)."""
        props = self._properties(PacketTypes.PUBLISH, content_type, event_id)
        info = self._client.publish(topic, payload, qos=self._qos, retain=False, properties=props)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return False
        self._acks.track(info.mid, "row", tag)
        return True

    def publish_blob(self, topic: str, payload: bytes, content_type: str, event_id: str) -> bool:
        """A QoS 1 side message (a snapshot) tied to an event by an ``event_id`` user property.
        Only while connected (nothing piles up in memory); False when not sent."""
        with self._lock:
            if not self._connected or self._stopped:
                return False
        props = None
        if self._v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = content_type
            props.UserProperty = ("event_id", event_id)
        info = self._client.publish(topic, payload, qos=self._qos, retain=False, properties=props)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish_stats(self, topic: str, doc: dict[str, Any]) -> None:
        """Best effort (QoS 0, not stored anywhere): periodic counters for dashboards. Not sent (logged at most
        once a minute) when larger than the broker's maximum packet size."""
        payload = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        size = self.oversize(topic, len(payload))
        if size is not None:
            self._throttle.warning("stats-too-large", "stats document of %d bytes not published: larger than the "
                                   "broker's maximum packet size of %s bytes", size, self._limits.max_packet_size)
            return
        self._client.publish(topic, payload, qos=0, retain=False, properties=self._properties(PacketTypes.PUBLISH))

    def republish_status(self) -> None:
        """Publish the retained ``online`` status again (its extra fields changed). Returns at once (QoS 1,
        not waiting for the PUBACK); does nothing while disconnected, since every connect publishes it."""
        with self._lock:
            connected = self._connected and not self._stopped
        if connected:
            self._publish_status(self._status.online())

    def flush(self, timeout: float) -> bool:
        """Wait until every published event is acknowledged (or dropped). False on timeout."""
        return self._acks.flush(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the retained ``offline``/``shutdown`` status (waiting up to ``timeout``
        for its acknowledgement), disconnect cleanly (no last will) and stop the thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            started, connected = self._started, self._connected
        if started and connected:
            mid = self._publish_status(self._status.offline())
            if mid is not None and not self._acks.wait_acked(mid, timeout):
                _log.warning("the broker did not acknowledge the offline status within %.1f s", timeout)
        unacked = self._acks.unacked_events()
        if unacked:
            _log.warning("stopping with %d event(s) not acknowledged by the broker", unacked)
        self._client.disconnect()
        if started:
            self._client.loop_stop()
            # paho closes its wake-up socket pair only in Client.__del__; close it now so a stopped
            # publisher holds no sockets (and GC raises no ResourceWarning)
            self._client._reset_sockets()  # noqa: SLF001
        with self._changed:
            self._connected = False
            self._changed.notify_all()

    def stats(self) -> PublisherStats:
        with self._lock:
            return PublisherStats(
                published=self._acks.published,
                acked=self._acks.acked,
                dropped=self._acks.dropped,
                pending=self._acks.published - self._acks.acked - self._acks.dropped,
                connected=self._connected,
                last_error=self._last_error,
                connects=self._connects,
            )

    # -- paho callbacks (network thread) ----------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        self._yield_network_thread()
        if reason_code.is_failure:
            where = f"{self._host}:{self._port}"
            error = f"broker {where} refused the connection: {reason_code} ({reason_code.value})"
            with self._changed:
                self._last_error = error
                self._refusals += 1
                self._connected = False
                first = error not in self._logged_errors
                self._logged_errors.add(error)
                self._changed.notify_all()
            if not self._adapt_will(reason_code) and first:
                _log.error("%s; retrying", error)
            return
        self._take_limits(properties)
        with self._changed:
            self._connected = True
            self._connects += 1
            self._refusals_reported = self._refusals
            self._logged_errors.clear()
            self._changed.notify_all()
        _log.info("connected to MQTT broker %s:%d as %s", self._host, self._port, self.client_id)
        self._status.online_since = now_rfc3339()
        self._publish_status(self._status.online())

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._yield_network_thread()
        now = time.monotonic()
        if now - self._last_diagnosis >= 60.0:  # paho swallows the OSError: find out why, now and then
            self._last_diagnosis = now
            self._diagnosis = diagnose_connection(self._host, self._port, self._tls_context,
                                                  timeout=min(5.0, self._config.keepalive_s))
        error = f"cannot connect to broker {self._host}:{self._port}: {self._diagnosis}"
        with self._changed:
            self._last_error = error
            first = error not in self._logged_errors
            self._logged_errors.add(error)
            self._changed.notify_all()
        if first:
            _log.warning("%s; retrying (events wait in the outbox meanwhile)", error)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        with self._changed:
            was_connected, stopping = self._connected, self._stopped
            self._connected = False
            if was_connected and not stopping:
                self._last_error = f"connection to {self._host}:{self._port} lost: {reason_code}"
            elif not stopping and not (self._last_error or "").startswith(f"broker {self._host}"):
                # closed before a CONNACK: e.g. a TLS broker that wants a client certificate
                error = (f"cannot connect to broker {self._host}:{self._port}: it closed the connection before "
                         f"accepting it ({reason_code})"
                         + ("; if it requires client certificates, set mqtt.tls.cert_file and key_file"
                            if self._tls_context is not None else ""))
                self._last_error = error
                if error not in self._logged_errors:
                    self._logged_errors.add(error)
                    _log.warning("%s; retrying", error)
            self._changed.notify_all()
        if was_connected and not stopping:
            _log.warning(
                "lost the connection to MQTT broker %s:%d (%s); reconnecting",
                self._host,
                self._port,
                reason_code,
            )

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        self._acks.on_ack(mid, reason_code)

    # -- internals --------------------------------------------------------------------------

    def _yield_network_thread(self) -> None:
        """Once per network thread (a connect callback runs on it): it yields its core to the model's threads
        (:mod:`agent.core.priority`), as the other threads around the model do."""
        me = threading.get_native_id()
        if self._network_thread != me:
            self._network_thread = me
            yield_to_model()

    def _settled(self, mid: int, kind: Kind, what: str, reason_code: ReasonCode) -> None:
        """A PUBACK for a tracked message (the ledger counted it; under the lock): a refusal is logged, a row's
        settlement goes to the ack listener."""
        if reason_code.is_failure:
            error = f"broker refused {kind} {what} (mid {mid}): {reason_code} ({reason_code.value})"
            self._last_error = error
            self._throttle.warning(f"refused {kind} {reason_code.value}", "%s%s", error,
                                   "; the outbox decides what happens to it" if kind == "row" else "; it is dropped")
        if kind == "row" and self._ack_listener is not None:
            self._ack_listener(what, reason_code)

    def _publish_status(self, status: dict[str, Any]) -> int | None:
        payload = self._status.payload(status, lambda n: self.oversize(self._status_topic, n),
                                       self._limits.max_packet_size)
        if payload is None:
            return None
        info = self._client.publish(
            self._status_topic,
            payload,
            qos=self._qos,
            retain=self._limits.retain_available,
            properties=self._properties(PacketTypes.PUBLISH),
        )
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            _log.warning("could not publish status %r: the MQTT in-memory queue is full", status["state"])
            return None
        self._acks.track(info.mid, "status", status["state"])
        return info.mid

    @property
    def _qos(self) -> int:
        return min(1, self._limits.maximum_qos)

    def _set_will(self) -> None:
        self._client.will_set(self._status_topic, self._status.will(), qos=self._status.will_qos,
                              retain=self._status.will_retain, properties=self._properties(PacketTypes.WILLMESSAGE))

    def _adapt_will(self, reason_code: ReasonCode) -> bool:
        """A CONNACK refusing the will's QoS or retain flag: send one the broker takes next time."""
        if not self._status.adapt_will(reason_code, f"{self._host}:{self._port}"):
            return False
        self._set_will()
        return True

    def _take_limits(self, properties: Properties | None) -> None:
        """Read the CONNACK's limits (MQTT 5) and apply them; log them when they changed."""
        if not self._v5:
            return
        limits = BrokerLimits.from_connack(properties)
        if limits == self._limits:
            return
        self._limits = limits
        _log.info("broker %s:%d announced: %s", self._host, self._port, limits.describe())
        if limits.receive_maximum < self._config_inflight():
            self._client.max_inflight_messages_set(limits.receive_maximum)
        for cost in limits.costs():
            _log.warning("broker %s:%d: %s", self._host, self._port, cost)

    def _config_inflight(self) -> int:
        return int(getattr(self._client, "_max_inflight_messages", 20))

    def _properties(self, packet_type: int, content_type: str = CONTENT_TYPE,
                    event_id: str | None = None) -> Properties | None:
        """A message's MQTT 5 properties (None on 3.1.1): a PUBLISH without an event id shares one packed set."""
        if not self._v5:
            return None
        if packet_type == PacketTypes.PUBLISH and event_id is None:
            return fixed_publish_properties(content_type)
        props = Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        props.ContentType = content_type
        if event_id is not None:
            props.UserProperty = ("event_id", event_id)
        return props
