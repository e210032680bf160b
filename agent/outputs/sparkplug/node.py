"""The edge node's MQTT session: births, one DDATA per tag event, the NDEATH will, rebirth on request, the
primary host's STATE, and the store that keeps every event until the broker has read its DDATA.

Threads. :meth:`SparkplugNode.on_published` (the runtime's event fan-out: the inference and escalation threads)
commits each event's record to the store and returns. paho's network thread runs the callbacks, which only
change flags under the lock (and re-register the will after a disconnect). One sender thread does every
publish, so the ``seq`` of the node's messages is a single sequence.

Delivery. Sparkplug B sends births and data with QoS 0 (spec 4.x), so a PUBACK cannot say a DDATA arrived. The
sender sends up to ``batch`` rows, then SUBSCRIBEs to the node's NCMD topic again: MQTT handles one
connection's packets in order, so the SUBACK proves the broker read every DDATA before it, and only then are
those rows deleted. A connection lost before the SUBACK leaves them in the store; they are sent again, as
historical, after the next NBIRTH (so a host may see such a DDATA twice: same ``Inspection/Event Id``).
Rows are sent oldest first; a DDATA whose event was captured before the current session's NBIRTH (committed
while the broker or the primary host was away, or left over from an earlier run) has ``is_historical`` set on
its metrics, stamped with the capture time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.sparkplug import SparkplugConfig
from agent.core.ports import Published
from agent.errors import EdgeAgentError
from agent.outputs.sparkplug import payloads
from agent.outputs.sparkplug.metrics import CameraTally, DeviceRecord, MetricValue, record_of
from agent.outputs.sparkplug.ports import Connection, RowStore, StoredRow
from agent.outputs.sparkplug.session import BdSeqFile, HostTracker, SeqCounter

__all__ = ["NAMESPACE", "SparkplugNode"]

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
_DEATH_WAIT_S = 2.0
_BACKLOG_EVERY_S = 5.0
_WARN_EVERY_S = 60.0  # the same warning at most this often  # the most often a changing backlog is sent as NDATA


class SparkplugNode:
    """One edge node (``group_id``/``edge_node_id``) with one device per camera."""

    def __init__(self, config: SparkplugConfig, client: mqtt.Client, store: RowStore, bdseq: BdSeqFile,
                 connect: Connection, *, cameras: Iterable[str], node_values: dict[str, MetricValue],
                 clock: Callable[[], float] = time.time) -> None:
        if config.group_id is None or config.edge_node_id is None:
            raise ValueError("SparkplugNode needs sparkplug.group_id and sparkplug.edge_node_id")
        self.config = config
        self.client = client
        self.store = store
        self.bdseq = bdseq
        self._connect = connect
        self._clock = clock
        self._node_values = node_values
        self._base = f"{NAMESPACE}/{config.group_id}"
        self._node = config.edge_node_id
        self.ncmd_topic = self._topic("NCMD")
        self.state_topic = f"{NAMESPACE}/STATE/{config.primary_host_id}" if config.primary_host_id else None
        self._cameras = list(dict.fromkeys(cameras))
        self._cv = threading.Condition()
        self._host = HostTracker(config.primary_host_id)
        self._seq = SeqCounter()
        self._tally: dict[str, CameraTally] = {}
        self._last: dict[str, DeviceRecord] = {}
        self._connected = self._ready = self._born = self._want_birth = self._terminate = False
        self._fresh = False  # connected, no NBIRTH yet in this connection
        self._ending = False  # the sender is ending the session (the host went offline)
        self._stopping = threading.Event()
        self._initial_mid: int | None = None
        self._barrier_mid: int | None = None
        self._barrier_ids: list[int] = []
        self._early_subacks: set[int] = set()
        self._to_delete: list[int] = []
        self._new_rows = True  # rows from an earlier run may wait
        self._devices_changed = False  # set_cameras() was called: DDEATH/DBIRTH to send
        self._cursor = 0  # the highest row id sent in this session
        self._session_ms = 0  # when this connection's first NBIRTH was sent
        self._born_devices: set[str] = set()
        self.births = self.sent = self.resent = self.bad_rows = self.store_failures = 0
        self._backlog = (0, 0.0)  # (the Health/Backlog value last sent, when)
        self._warned: dict[str, float] = {}  # warning key -> when last logged
        self._thread: threading.Thread | None = None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message

    def _topic(self, kind: str, device: str | None = None) -> str:
        return f"{self._base}/{kind}/{self._node}" + (f"/{device}" if device is not None else "")

    # -- the runtime's side ---------------------------------------------------------------------------

    def start(self) -> None:
        """Register the NDEATH will with the next bdSeq, connect in the background, start the sender."""
        self._set_will(self.bdseq.advance())
        self._connect(self.client)
        rc = self.client.loop_start()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"cannot start the Sparkplug MQTT network thread: {mqtt.error_string(rc)}")
        self._thread = threading.Thread(target=self._run, name="sparkplug", daemon=True)
        self._thread.start()

    def on_published(self, published: Published) -> None:
        """An event the publisher took: its record goes to the store (the sender sends it as DDATA)."""
        event = published.event
        with self._cv:
            tally = self._tally.setdefault(event.camera, CameraTally())
            record = record_of(event, tally, self.config.metrics)
            self._last[event.camera] = record
            if event.camera not in self._cameras:
                self._cameras.append(event.camera)
        try:
            self.store.append(event.event_id, event.camera,
                              self._topic("DDATA", self.config.device_for(event.camera)), record.to_json())
        except EdgeAgentError as exc:  # the store's disk is full or broken: inspection and the JSON events go on
            self.store_failures += 1
            self._warn_once("store", "Sparkplug: event %s not stored, it will not be sent as DDATA (%s); %d event(s) "
                            "missed so far; the JSON tag events are not affected", event.event_id, exc,
                            self.store_failures, level=logging.ERROR)
            return
        with self._cv:
            self._new_rows = True
            self._cv.notify_all()

    def set_cameras(self, cameras: Iterable[str]) -> None:
        """A reload's cameras: a removed camera's device gets a DDEATH (its events already in the store are still
        sent), an added one its DBIRTH, both from the sender thread."""
        with self._cv:
            self._cameras = list(dict.fromkeys(cameras))
            self._devices_changed = True
            self._cv.notify_all()

    def wait_born(self, timeout: float) -> bool:
        """Wait until the node's NBIRTH was sent in the current connection (tests, the demo)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._born, timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until the store is empty (every DDATA read by the broker). False on timeout."""
        deadline = time.monotonic() + timeout
        while self.store.stats().rows > 0:
            if time.monotonic() >= deadline:
                return False
            with self._cv:
                self._cv.wait(0.05)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the sender; while born, publish the NDEATH (a clean disconnect sends no will); disconnect."""
        self._stopping.set()
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cv:
            born = self._born and self._connected
        if born:
            self._publish_death(min(timeout, _DEATH_WAIT_S))
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # noqa: SLF001  (paho closes its socket pair only in __del__)
        left = self.store.stats().rows
        if left:
            log.info("%d Sparkplug event(s) stay in the store and are sent, as historical, after the next start",
                     left)
        self.store.close()

    def status_fields(self) -> dict[str, Any]:
        """The retained device status's ``sparkplug`` entry."""
        with self._cv:
            state = ("born" if self._born else "waiting for the primary host" if self._connected
                     and not self._host.online else "connecting" if not self._connected else "subscribing")
            return {"sparkplug": {"node": f"{self.config.group_id}/{self._node}", "state": state,
                                  "bdseq": self.bdseq.value, "backlog": self.store.stats().rows}}

    # -- paho's network thread ---------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            self._warn_once(f"refused {reason_code}", "Sparkplug: the broker refused the connection: %s; retrying "
                            "(events wait in the store)", reason_code)
            return
        topics = [(self.ncmd_topic, 1)] + ([(self.state_topic, 1)] if self.state_topic else [])
        with self._cv:
            self._connected, self._ready, self._born, self._fresh = True, False, False, True
            self._early_subacks.clear()  # mids of an earlier connection mean nothing now
            self._host.reset()
        rc, mid = client.subscribe(topics)
        with self._cv:
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._initial_mid = mid
                self._ready = mid in self._early_subacks
            self._cv.notify_all()
        log.info("Sparkplug: connected as edge node %s/%s (bdSeq %d)%s", self.config.group_id, self._node,
                 self.bdseq.value, f"; waiting for host {self._host.host_id} to be online"
                 if not self._host.online else "")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        with self._cv:
            was, terminating = self._connected, self._ending
            self._connected = self._ready = self._born = False
            self._barrier_mid, self._barrier_ids = None, []
            self._cv.notify_all()
        if self._stopping.is_set():
            return
        bdseq = self.bdseq.advance()  # the next connection's will
        self._set_will(bdseq)
        if was and not terminating:
            log.warning("Sparkplug: lost the connection to the broker (%s); reconnecting with bdSeq %d; events wait "
                        "in the store", reason_code, bdseq)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        with self._cv:
            if mid == self._initial_mid:
                self._ready = True
                failed = [rc for rc in reason_codes if rc.is_failure]
                if failed:
                    log.error("Sparkplug: the broker refused the subscription to %s: %s; rebirth requests and "
                              "host STATE are not heard", self.ncmd_topic, failed[0])
            elif mid == self._barrier_mid:
                self._to_delete += self._barrier_ids
                self._barrier_mid, self._barrier_ids = None, []
            else:
                self._early_subacks.add(mid)
            self._cv.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.ncmd_topic:
            self._on_command(bytes(message.payload))
        elif message.topic == self.state_topic:
            self._on_state(bytes(message.payload))

    def _on_command(self, data: bytes) -> None:
        try:
            rebirth = payloads.rebirth_requested(data)
        except ValueError as exc:
            self._warn_once("ncmd", "Sparkplug: ignoring an NCMD on %s: %s", self.ncmd_topic, exc)
            return
        if rebirth:
            log.info("Sparkplug: the host asked for a rebirth (NCMD Node Control/Rebirth)")
            with self._cv:
                self._want_birth = True
                self._cv.notify_all()

    def _on_state(self, data: bytes) -> None:
        if not data:
            return  # the retained STATE was cleared: nothing said about the host
        try:
            state = payloads.parse_state(data)
        except ValueError as exc:
            self._warn_once("state", "Sparkplug: ignoring a message on %s: %s", self.state_topic, exc)
            return
        with self._cv:
            if not self._host.update(state):
                return
            if not state.online and self._connected:
                self._terminate = True
            self._cv.notify_all()
        log.log(logging.INFO if state.online else logging.WARNING, "Sparkplug: primary host %s is %s%s",
                self._host.host_id, "online" if state.online else "offline",
                "; births follow" if state.online else "; ending this session (NDEATH, disconnect)")

    # -- the sender thread ------------------------------------------------------------------------------

    def _work(self) -> bool:
        """Caller holds the lock: whether the sender has something to do."""
        can_birth = self._connected and self._ready and self._host.online
        return (bool(self._to_delete) or self._terminate or (can_birth and (not self._born or self._want_birth))
                or (self._born and self._devices_changed)
                or (self._born and self._barrier_mid is None and not self._barrier_ids and self._new_rows))

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                with self._cv:
                    self._cv.wait_for(lambda: self._stopping.is_set() or self._work(), 0.5)
                    done, self._to_delete = self._to_delete, []
                    terminate, self._terminate = self._terminate, False
                    birth = self._connected and self._ready and self._host.online and (
                        not self._born or self._want_birth)
                if done:
                    self.store.delete(done)
                    self._report_backlog()
                if self._stopping.is_set():
                    break
                if terminate:
                    self._end_session()
                elif birth:
                    self._birth()
                else:
                    self._update_devices()
                    self._send_batch()
        except Exception:  # noqa: BLE001  a bug here must not silently stop the output
            log.exception("Sparkplug sender stopped by an error; events stay in its store")

    def _birth(self) -> None:
        """NBIRTH (seq 0) and a DBIRTH per known camera. A new connection's first birth starts a session: the
        rows not yet confirmed are sent again, and everything captured before now is historical."""
        now = self._now_ms()
        with self._cv:
            new_session, self._fresh = self._fresh, False
            self._want_birth = False
            cameras = list(self._cameras)
            last = dict(self._last)
            seq0 = self._seq.birth()
        values = {**self._node_values, "Health/Backlog": self.store.stats().rows}
        self._backlog = (int(values["Health/Backlog"] or 0), time.monotonic())
        if not self._publish(self._topic("NBIRTH"), payloads.node_birth(self.bdseq.value, now, values), seq0):
            return
        self._born_devices = set()
        for camera in cameras:
            self._device_birth(camera, now, last.get(camera))
        with self._cv:
            if new_session:
                self._session_ms, self._cursor = now, 0
                self._barrier_mid, self._barrier_ids = None, []
            self._born = self._new_rows = True
            self.births += 1
            self._cv.notify_all()
        log.info("Sparkplug: NBIRTH with bdSeq %d and %d DBIRTH(s) sent", self.bdseq.value, len(cameras))

    def _device_birth(self, camera: str, now: int, last: DeviceRecord | None) -> bool:
        device = self.config.device_for(camera)
        seq = self._seq.next()
        ok = self._publish(self._topic("DBIRTH", device), payloads.device_birth(seq, now, self.config.metrics,
                                                                                  last), seq)
        if ok:
            self._born_devices.add(device)
        return ok

    def _update_devices(self) -> None:
        """After set_cameras(): DDEATH for each born device no camera has now, DBIRTH for each camera not born.
        A removed camera's rows still in the store get a DBIRTH again before their DDATA (they are its history)."""
        with self._cv:
            if not self._born or not self._devices_changed:
                return
            self._devices_changed = False
            cameras, last = list(self._cameras), dict(self._last)
        wanted = {self.config.device_for(c) for c in cameras}
        now = self._now_ms()
        for device in sorted(self._born_devices - wanted):
            seq = self._seq.next()
            if self._publish(self._topic("DDEATH", device), payloads.device_death(seq, now), seq):
                self._born_devices.discard(device)
        for camera in cameras:
            if self.config.device_for(camera) not in self._born_devices:
                self._device_birth(camera, now, last.get(camera))

    def _send_batch(self) -> None:
        with self._cv:
            if not self._born or self._barrier_mid is not None or self._barrier_ids:
                return
            cursor, session_ms = self._cursor, self._session_ms
            self._new_rows = False
        rows = self.store.next_rows(cursor, self.config.batch)
        sent: list[int] = []
        for row in rows:
            if not self._send_row(row, session_ms):
                break
            sent.append(row.id)
        if not sent:
            return
        with self._cv:
            self._cursor = sent[-1]
            self._barrier_ids = sent
            self._new_rows = self._new_rows or len(rows) == self.config.batch
        rc, mid = self.client.subscribe(self.ncmd_topic, qos=1)  # the round trip that confirms the batch
        with self._cv:
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not self._connected:
                self._barrier_ids = []  # the disconnect resets the session: sent again after the next birth
                self._early_subacks.discard(mid)
            elif mid in self._early_subacks:
                self._early_subacks.discard(mid)
                self._to_delete += sent
                self._barrier_ids = []
            else:
                self._barrier_mid = mid
            self._cv.notify_all()

    def _send_row(self, row: StoredRow, session_ms: int) -> bool:
        """One row's DDATA (its device's DBIRTH first if this session has not sent it). False when the
        connection is gone (the row stays)."""
        try:
            record = DeviceRecord.from_json(row.payload)
        except ValueError as exc:
            self.bad_rows += 1
            self._warn_once("row", "Sparkplug: store row %d is damaged (%s); skipped (%d so far)", row.id, exc,
                            self.bad_rows, level=logging.ERROR)
            return True
        device = self.config.device_for(record.camera)
        if device not in self._born_devices and not self._device_birth(record.camera, self._now_ms(), None):
            return False
        historical = record.captured_ms < session_ms
        seq = self._seq.next()
        if not self._publish(self._topic("DDATA", device),
                             payloads.device_data(seq, self._now_ms(), record, historical=historical), seq):
            return False
        self.sent += 1
        self.resent += historical
        return True

    def _report_backlog(self) -> None:
        """NDATA ``Health/Backlog`` when the store's row count changed since the value last sent: at once when it
        reaches 0 (caught up), else at most every ``_BACKLOG_EVERY_S``."""
        rows, (sent, at) = self.store.stats().rows, self._backlog
        with self._cv:
            born = self._born
        if not born or rows == sent or (rows and time.monotonic() - at < _BACKLOG_EVERY_S):
            return
        seq = self._seq.next()
        if self._publish(self._topic("NDATA"), payloads.node_data(seq, self._now_ms(), {"Health/Backlog": rows}),
                         seq):
            self._backlog = (rows, time.monotonic())

    def _end_session(self) -> None:
        """The primary host went offline: NDEATH, disconnect, connect again (and wait for it to be online)."""
        with self._cv:
            self._ending = True
        try:
            self._publish_death(_DEATH_WAIT_S)
            self.client.disconnect()
            self.client.loop_stop()
            self.client._reset_sockets()  # noqa: SLF001  (loop_start makes a new socket pair without closing this)
        finally:
            with self._cv:
                self._ending = False
        if not self._stopping.is_set():
            self._connect(self.client)
            self.client.loop_start()

    # -- helpers ------------------------------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, seq: int) -> bool:
        info = self.client.publish(topic, payload, qos=0, retain=False)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.debug("Sparkplug: %s (seq %d) not sent: %s", topic, seq, mqtt.error_string(info.rc))
            return False
        return True

    def _publish_death(self, wait_s: float) -> None:
        info = self.client.publish(self._topic("NDEATH"), payloads.node_death(self.bdseq.value, self._now_ms()),
                                   qos=1, retain=False)
        try:
            info.wait_for_publish(wait_s)
        except (RuntimeError, ValueError) as exc:
            log.warning("Sparkplug: the NDEATH was not acknowledged (%s)", exc)

    def _warn_once(self, key: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        """Log ``message`` at most once a minute per ``key`` (a host sending garbage must not flood the log)."""
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= _WARN_EVERY_S:
            self._warned[key] = now
            log.log(level, message, *args)

    def _set_will(self, bdseq: int) -> None:
        self.client.will_set(self._topic("NDEATH"), payloads.node_death(bdseq, self._now_ms()), qos=1, retain=False)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)
