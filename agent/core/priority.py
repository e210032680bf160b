"""Thread priorities: the threads that feed and drain the model yield to it.

On a small box every core is busy: the model's threads (onnxruntime's) and the ones around it
(grabbers decoding video, the thread that letterboxes frames, the one that publishes events) all
want a core at once, and a model thread that waits for a core slows every frame. The threads
around the model therefore run ``FEEDER_NICE`` steps nicer than the process: Linux gives them
about a third of a core's time when they compete with the model, and all of it when the model
waits (between its parallel sections, on the GIL, for a frame). They need far less than the model
(a few milliseconds a frame), so they keep up. The feeding ones: the grabbers
(``agent.capture.grabber``), the inference loop's ``inference-prepare`` and ``inference-publish``
(``agent.runtime.loop``); the draining ones: the outbox forwarder (``agent.publish.reliable``) and
paho's network thread (``agent.publish.mqtt_publisher``). It lives in core so that every stage can
call it. Linux only (a thread id is a scheduling entity there); elsewhere, and where the call is
refused, nothing changes.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

FEEDER_NICE = 5
"""How many nice steps the feeding and draining threads add to the process's own niceness."""


def yield_to_model(steps: int | None = None) -> None:
    """Make the calling thread ``steps`` (default ``FEEDER_NICE``) nicer than it is (at most 19). Never raises."""
    steps = FEEDER_NICE if steps is None else steps
    if steps <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + steps))
    except OSError as exc:  # a sandbox may refuse; the thread runs at the process's priority
        log.debug("could not lower the priority of thread %s: %s", threading.current_thread().name, exc)
