"""The supervisor thread: READY=1 once start-up is done, then WATCHDOG=1 while every stage makes
progress, and a one-line STATUS= now and then.

It knows nothing of cameras or models; it is given three functions:

* ``readiness() -> (ready, status line)``: polled every 50 ms until it says ready;
  then READY=1 is sent with that status line.
* ``report() -> HealthReport``: the stages' progress (:mod:`agent.ops.stages`).
  While ``report().watchdog_ok``, a WATCHDOG=1 ping goes out every half
  ``WATCHDOG_USEC``; when a stage is stuck (or its thread died) the pings stop, an
  error is logged and STATUS= names the stage, so systemd kills and restarts the
  service once ``WatchdogSec`` passes (unless the stage recovers first: then the
  pings resume and that is logged too).
* ``status() -> str``: the periodic one-line summary (every ``status_interval_s``).

The pings come from this thread, but only on the evidence of the stages' own
progress stamps: a hung inference or capture thread stops them, which a timer that
pinged unconditionally would not. :meth:`stop` sends STOPPING=1.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.ops.notify import Notifier
from agent.ops.stages import HealthReport

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)

_READY_POLL_S = 0.05
_WAITING_STATUS_S = 2.0  # how often "starting: waiting for ..." is refreshed


class Supervisor:
    def __init__(
        self,
        notifier: Notifier,
        *,
        readiness: Callable[[], tuple[bool, str]],
        report: Callable[[], HealthReport],
        status: Callable[[], str],
        status_interval_s: float = 10.0,
    ) -> None:
        self.notifier = notifier
        self._readiness = readiness
        self._report = report
        self._status = status
        self._status_interval_s = status_interval_s
        self.ready = threading.Event()
        self._ready_lock = threading.RLock()  # READY=1 going out and ``ready`` being set are one step
        self.last_report: HealthReport | None = None
        self.pings = 0
        self._stuck: tuple[str, ...] = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stuck(self) -> tuple[str, ...]:
        """The stages that stopped the watchdog at the last look (empty when all is well)."""
        return self._stuck

    def is_ready(self) -> bool:
        """Whether READY=1 was sent; True as soon as systemd (or a test listening) could have it."""
        with self._ready_lock:
            return self.ready.is_set()

    def if_ready(self, action: Callable[[], object]) -> bool:
        """Run ``action`` if READY=1 was sent, and say whether it ran. Once systemd could have READY=1, this
        sees it too: never between READY=1 going out and ``ready`` being set."""
        with self._ready_lock:
            if not self.ready.is_set():
                return False
            action()
            return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self, status: str = "stopping") -> None:
        """Stop the thread and send STOPPING=1 with ``status``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self.notifier.stopping(status)

    def _run(self) -> None:
        try:
            self._wait_ready()
            if not self._stop.is_set():
                self._supervise()
        except Exception:  # noqa: BLE001  a bug here must be seen; without pings systemd restarts the service
            log.exception("the supervisor thread failed; watchdog pings stopped")
            self.notifier.status("supervisor thread failed; watchdog pings stopped (see the log)")

    def _wait_ready(self) -> None:
        last_status = 0.0
        while not self._stop.is_set():
            ok, text = self._readiness()
            if ok:
                with self._ready_lock:
                    self.notifier.ready(text)
                    self.ready.set()
                log.info("%s", text)
                return
            now = time.monotonic()
            if now - last_status >= _WAITING_STATUS_S:
                self.notifier.status(text)
                last_status = now
            self._stop.wait(_READY_POLL_S)

    def _supervise(self) -> None:
        ping_s = self.notifier.watchdog_interval_s
        tick = min(ping_s, self._status_interval_s, 1.0) if ping_s else min(self._status_interval_s, 1.0)
        next_status = time.monotonic() + self._status_interval_s
        next_tick = time.monotonic()
        while not self._stop.is_set():
            report = self._report()
            self.last_report = report
            now = time.monotonic()
            if report.watchdog_ok:
                if self._stuck:
                    log.warning("every stage is making progress again (%s recovered); watchdog pings resume",
                                ", ".join(self._stuck))
                    self._stuck = ()
                    next_status = now
                if ping_s and self.notifier.watchdog():
                    self.pings += 1
                if now >= next_status:
                    self.notifier.status(self._status())
                    next_status = now + self._status_interval_s
            else:
                line = "STUCK, watchdog pings stopped: " + "; ".join(report.problems)
                if report.stuck != self._stuck:
                    log.error("%s", line)
                    self._stuck = report.stuck
                    next_status = now
                if now >= next_status:
                    self.notifier.status(line)
                    next_status = now + self._status_interval_s
            # on a fixed schedule, so that the time spent here does not stretch the interval between pings
            next_tick = max(next_tick + tick, time.monotonic() + tick / 4)
            self._stop.wait(max(0.0, next_tick - time.monotonic()))
