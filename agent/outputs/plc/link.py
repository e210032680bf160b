"""One PLC connection: a thread that connects (again, with capped backoff), reads the PLC's trigger and
acknowledgement bits, and writes the results of its cameras. Nothing here runs on the inference loop: results
come in through :meth:`Channel.offer` (a lock and a bounded queue) and the thread is woken.

Queue policy (``plc.queue`` results per camera, write mode): when full, the oldest result is dropped, counted
(``dropped``) and error 6 is written once the PLC takes writes again. A handshake camera holds at most one
result: its pending trigger's.

A cause of trouble (PLC unreachable, a write refused, a timeout) is logged once a minute at most, with the count
of occurrences since; every one is counted in :class:`ChannelStats`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence

from agent.config.plc import CameraPlcConfig, PlcConnectionConfig
from agent.core.event import TagEvent
from agent.outputs.plc.gate import TriggerGate
from agent.outputs.plc.handshake import ErrorCode, Handshake, Phase, Step, WriteCounter, error_writes
from agent.outputs.plc.regmap import Address
from agent.outputs.plc.results import PlcResult, Value, result_of
from agent.outputs.plc.transport import PlcError, PlcRefused, PlcTransport, PlcUnreachable

__all__ = ["Channel", "ChannelStats", "PlcLink"]

log = logging.getLogger(__name__)

_REPORT_EVERY_S = 60.0


@dataclasses.dataclass
class ChannelStats:
    """One camera's PLC counters (cumulative since start)."""

    triggers: int = 0  # triggers taken (handshake)
    results_written: int = 0  # results the PLC got (handshake: result_ready raised)
    results_unwritten: int = 0  # results that could not be written (PLC refused, PLC lost mid-handshake)
    results_dropped: int = 0  # write mode: dropped from a full queue while the PLC was away or slow
    late_results: int = 0  # handshake: a verdict that came after its trigger had timed out
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)  # by ErrorCode name
    latencies_ms: collections.deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=2000))  # trigger seen -> result_ready written


class Channel:
    """One camera on one PLC: its map, its handshake (or write counter), its gate and its queue."""

    def __init__(self, camera: str, cfg: CameraPlcConfig, addresses: dict[str, Address], queue: int,
                 gate: TriggerGate | None) -> None:
        self.camera, self.cfg, self.addresses, self.gate = camera, cfg, addresses, gate
        self.handshake = Handshake(cfg.ack_timeout_s, cfg.result_timeout_s) if cfg.mode == "handshake" else None
        self.counter = self.handshake.counts if self.handshake is not None else WriteCounter()
        self._lock = threading.Lock()
        self._pending: collections.deque[tuple[int, PlcResult]] = collections.deque()  # (its number, result)
        self._offered = 0  # write mode: results numbered as they come, so a dropped one leaves a gap
        self._queue = queue
        self.stats = ChannelStats()
        self.owed: ErrorCode = ErrorCode.NONE  # an error to write once the PLC takes writes again

    def offer(self, event: TagEvent) -> bool:
        """A published event of this camera (any thread). True when it is a result to write."""
        cfg = self.cfg
        result = result_of(event, uncertain_is_ng=cfg.uncertain_is_ng, codes=cfg.defect_codes,
                           unknown_code=cfg.unknown_defect_code)
        with self._lock:
            if self.gate is not None:
                if self.gate.released != event.sequence or self.handshake is None \
                        or self.handshake.phase != Phase.INSPECTING:
                    self.stats.late_results += 1
                    return False
                self._pending.clear()
            elif len(self._pending) >= self._queue:
                self._pending.popleft()
                self.stats.results_dropped += 1
                self.owed = ErrorCode.QUEUE_FULL
                self.stats.errors[ErrorCode.QUEUE_FULL.name] += 1
            self._offered += 1
            self._pending.append((self._offered, result))
        return True

    def take(self) -> tuple[int, PlcResult] | None:
        with self._lock:
            return self._pending.popleft() if self._pending else None

    def take_owed(self) -> ErrorCode:
        with self._lock:
            code, self.owed = self.owed, ErrorCode.NONE
            return code


class _Reporter:
    """A warning per cause at most once a minute, saying how often it happened since."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._last: dict[str, tuple[float, int]] = {}
        self.last_error: str | None = None

    def __call__(self, cause: str, message: str) -> None:
        self.last_error = message
        now = time.monotonic()
        last, count = self._last.get(cause, (-_REPORT_EVERY_S, 0))
        if now - last < _REPORT_EVERY_S:
            self._last[cause] = (last, count + 1)
            return
        more = f" ({count} more time(s) in the last minute)" if count else ""
        log.warning("PLC %s: %s%s", self.target, message, more,
                    extra={"plc": self.target, "cause": cause, "repeats": count})
        self._last[cause] = (now, 0)


class PlcLink:
    """The thread of one PLC connection and the cameras that write to it."""

    def __init__(self, name: str, cfg: PlcConnectionConfig, transport: PlcTransport,
                 channels: Sequence[Channel]) -> None:
        self.name, self.cfg, self.transport = name, cfg, transport
        self.channels = list(channels)
        self.connected = False
        self.connects = 0
        self.on_change: Callable[[], None] | None = None  # told when the connection comes or goes
        self.report = _Reporter(f"{name} ({transport.target})")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"plc-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self.transport.close()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        backoff = self.cfg.reconnect_initial_s
        while not self._stop.is_set():
            if not self.connected:
                if self._connect():
                    backoff = self.cfg.reconnect_initial_s
                else:
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.cfg.reconnect_max_s)
                continue
            try:
                for channel in self.channels:
                    self._service(channel)
            except PlcUnreachable as exc:
                self._lost(exc)
                continue
            self._wake.wait(self.cfg.poll_interval_s)
            self._wake.clear()
        self._drain()

    def _drain(self) -> None:
        """Stopping: the results still queued (write mode) are written while the PLC is there; the ones that
        cannot be are counted as dropped."""
        for channel in self.channels:
            if channel.handshake is not None:
                continue
            try:
                if self.connected:
                    self._service(channel)
            except PlcUnreachable as exc:
                self.report("unreachable", f"connection lost while stopping ({exc})")
            while channel.take() is not None:
                channel.stats.results_dropped += 1

    def _connect(self) -> bool:
        try:
            self.transport.connect()
            self.connected = True
            for channel in self.channels:
                self._greet(channel)
        except PlcError as exc:
            self.connected = False
            self.transport.close()
            self.report("unreachable", f"unreachable ({exc}); retrying, the other cameras go on")
            return False
        self.connects += 1
        log.info("PLC %s connected (%s)", self.name, self.transport.target, extra={"plc": self.name})
        self._changed()
        return True

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _greet(self, channel: Channel) -> None:
        """A fresh connection: the handshake starts over and an error owed from the time away is written (write
        mode: after the results left in its queue, see :meth:`_service`)."""
        if channel.handshake is not None:
            self._apply(channel, channel.handshake.reset())
            self._write_owed(channel)

    def _write_owed(self, channel: Channel) -> None:
        """The error owed since the PLC last took writes (PLC lost mid-handshake, results dropped), logged and
        written."""
        code = channel.take_owed()
        if code != ErrorCode.NONE:
            self.report(code.name, f"camera {channel.camera}: error {int(code)} ({code.name.lower().replace('_', ' ')}"
                        f"; {channel.stats.results_dropped} result(s) dropped, {channel.stats.results_unwritten} "
                        "unwritten so far)")
            self._write(channel, error_writes(code))

    def _lost(self, exc: PlcError) -> None:
        self.connected = False
        self.transport.close()
        self.report("unreachable", f"connection lost ({exc}); reconnecting, the other cameras go on")
        self._changed()
        for channel in self.channels:
            machine = channel.handshake
            if machine is not None and machine.phase != Phase.READY:
                if machine.phase == Phase.INSPECTING:
                    channel.stats.results_unwritten += 1  # its result can no longer reach the PLC
                channel.stats.errors[ErrorCode.PLC_LOST.name] += 1
                channel.owed = ErrorCode.PLC_LOST
                machine.reset()
                if channel.gate is not None:
                    channel.gate.disarm()

    def _service(self, channel: Channel) -> None:
        machine = channel.handshake
        if machine is None:
            while (taken := channel.take()) is not None:
                number, result = taken
                self._deliver(channel, channel.counter.result(result, number))
            self._write_owed(channel)  # results were dropped: said after the ones that were left
            return
        if machine.waits_for_ack and self.transport.read_bool(channel.addresses["result_ack"]):
            self._apply(channel, machine.acknowledged())
        if self.transport.read_bool(channel.addresses["trigger"]):
            step = machine.triggered(time.monotonic())
            if step.arm is not None:
                channel.stats.triggers += 1
            self._apply(channel, step)
        taken = channel.take()
        if taken is not None:
            step_or_none = machine.finished(taken[1], time.monotonic())
            if step_or_none is not None:
                self._deliver(channel, step_or_none)
                channel.stats.latencies_ms.append((time.monotonic() - machine.trigger_at) * 1000.0)
        timed_out = machine.tick(time.monotonic())
        if timed_out is not None:
            self._apply(channel, timed_out)

    def _deliver(self, channel: Channel, step: Step) -> None:
        """A result's writes; refused: counted, error 4 written where the PLC takes it."""
        try:
            self._apply(channel, step, raising=True)
        except PlcRefused as exc:
            channel.stats.results_unwritten += 1
            self._refused(channel, exc)
            if channel.handshake is not None:
                self._apply(channel, channel.handshake.reset())
            return
        channel.stats.results_written += 1

    def _apply(self, channel: Channel, step: Step, *, raising: bool = False) -> None:
        if step.arm is not None and channel.gate is not None:
            channel.gate.arm(step.arm)
        if step.disarm and channel.gate is not None:
            channel.gate.disarm()
        if step.error != ErrorCode.NONE:
            channel.stats.errors[step.error.name] += 1
            self.report(step.error.name, f"camera {channel.camera}: error {int(step.error)} "
                        f"({step.error.name.lower().replace('_', ' ')})")
        try:
            self._write(channel, step.writes)
        except PlcRefused as exc:
            if raising:
                raise
            self._refused(channel, exc)

    def _refused(self, channel: Channel, exc: PlcRefused) -> None:
        channel.stats.errors[ErrorCode.WRITE_REFUSED.name] += 1
        self.report(f"refused-{channel.camera}", f"camera {channel.camera}: {exc}")
        with contextlib.suppress(PlcRefused):  # the error signals refused too: counted and logged above
            self._write(channel, error_writes(ErrorCode.WRITE_REFUSED))

    def _write(self, channel: Channel, writes: Sequence[tuple[str, Value]]) -> None:
        """The writes of the signals this camera maps, in groups: the data, then ``sequence``, then
        ``result_ready``, so the PLC never sees a new sequence or a ready flag before the data."""
        group: list[tuple[str, Address, Value]] = []
        for signal, value in writes:
            address = channel.addresses.get(signal)
            if address is None:
                continue
            if signal in ("sequence", "result_ready") and group:
                self.transport.write(group)
                group = []
            group.append((signal, address, value))
        if group:
            self.transport.write(group)
