"""The threads around the model run nicer than the process (agent.core.priority)."""

from __future__ import annotations

import os
import pathlib
import sys
import threading
import time

import pytest

from agent.config.models import MqttConfig
from agent.core.priority import FEEDER_NICE, yield_to_model
from agent.publish.local_broker import LocalMosquitto
from agent.publish.mqtt_publisher import MqttPublisher
from agent.publish.outbox import Outbox
from agent.publish.reliable import ReliablePublisher

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def niceness_after(steps: int | None) -> tuple[int, int, int]:
    """(the process's niceness, the thread's before, after yield_to_model(steps)) on a new thread."""
    seen: list[int] = []

    def run() -> None:
        tid = threading.get_native_id()
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))
        yield_to_model(steps)
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return os.getpriority(os.PRIO_PROCESS, os.getpid()), seen[0], seen[1]


def test_the_calling_thread_alone_becomes_nicer() -> None:
    process, before, after = niceness_after(None)
    assert after == min(19, before + FEEDER_NICE) and FEEDER_NICE > 0
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == process  # the process and its other threads keep theirs
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == process


def test_niceness_stops_at_19() -> None:
    _process, before, after = niceness_after(40)
    assert after == 19 >= before


def test_the_outbox_forwarder_and_pahos_network_thread_yield_too(mosquitto: LocalMosquitto,
                                                                  tmp_path: pathlib.Path) -> None:
    # the draining threads of the publish path run FEEDER_NICE nicer than the process, the caller's thread does not
    process = os.getpriority(os.PRIO_PROCESS, os.getpid())
    pub = ReliablePublisher(Outbox(tmp_path / "o.sqlite"), MqttPublisher(MqttConfig(url=mosquitto.url), "dev1"),
                            topic_prefix="edge")
    pub.start()
    try:
        assert pub.wait_connected(10.0)
        threads = {t.name: t.native_id for t in threading.enumerate()}
        paho = [tid for name, tid in threads.items() if name.startswith("paho-mqtt-client-edge-agent-dev1")]
        deadline = time.monotonic() + 5.0  # the forwarder lowers its priority as it starts
        while os.getpriority(os.PRIO_PROCESS, threads["outbox-forwarder"]) == process and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(paho) == 1
        for tid in (threads["outbox-forwarder"], paho[0]):
            assert os.getpriority(os.PRIO_PROCESS, tid) == min(19, process + FEEDER_NICE)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == process
    finally:
        pub.stop()
