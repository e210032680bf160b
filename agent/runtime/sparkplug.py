"""Building the Sparkplug B edge node (:mod:`agent.outputs.sparkplug.node`) from the config: its store and bdSeq
file next to the outbox, its own paho client on the broker of ``mqtt:`` (client id ``<client id>-spb``, a clean
session as Sparkplug requires), and stopping it at shutdown."""

from __future__ import annotations

import logging
import pathlib
import time

import paho.mqtt.client as mqtt

from agent.config.loader import resolve_runtime_paths
from agent.config.models import AgentConfig, MqttConfig
from agent.core.ports import Publisher
from agent.core.version import agent_version
from agent.errors import ConfigError
from agent.outputs.sparkplug.node import SparkplugNode
from agent.outputs.sparkplug.session import BdSeqFile
from agent.publish.mqtt_connection import make_client, read_password, tls_context_for
from agent.publish.outbox import Outbox
from agent.runtime.fanout import EventFanout

__all__ = ["attach_sparkplug", "build_sparkplug", "stop_sparkplug"]

log = logging.getLogger("agent.outputs.sparkplug")


def build_sparkplug(config: AgentConfig) -> SparkplugNode | None:
    """The edge node when ``sparkplug.enabled`` (None otherwise); ConfigError/PublishError naming the field."""
    sp = config.sparkplug
    if not sp.enabled:
        return None
    cameras = [cam.id for cam in config.cameras]
    unknown = [f"sparkplug.devices.{c}: no camera has the id {c!r}; expected one of {', '.join(cameras)}"
               for c in sp.devices if c not in cameras]
    clashes = [f"sparkplug.devices: camera {c!r} would be device {sp.device_for(c)!r}, which another camera "
               "already is; give them different device ids" for i, c in enumerate(cameras)
               if sp.device_for(c) in {sp.device_for(o) for o in cameras[:i]}]
    if unknown or clashes:
        raise ConfigError(unknown + clashes)
    config = resolve_runtime_paths(config)
    outbox_path = config.outbox.path or pathlib.Path("outbox.sqlite")
    store_path = sp.store_path or outbox_path.with_name("sparkplug.sqlite")
    mqtt_config = config.mqtt.model_copy(update={"session_expiry_s": 0})  # Sparkplug: clean sessions only
    client_id = (config.mqtt.client_id or f"edge-agent-{config.device_id}") + "-spb"
    client, _ = make_client(mqtt_config, client_id, log, config.mqtt.username, read_password(config.mqtt),
                            tls_context_for(config.mqtt))
    store = Outbox(store_path, max_rows=sp.max_rows, max_bytes=config.outbox.max_bytes,
                   synchronous=config.outbox.synchronous)
    bdseq = BdSeqFile(store_path.with_name(store_path.stem + ".bdseq"))
    return SparkplugNode(sp, client, store, bdseq, _Connector(mqtt_config), cameras=cameras,
                         node_values={"Properties/Agent Version": agent_version(),
                                      "Properties/Device Id": config.device_id})


class _Connector:
    """``connect_async`` to the broker of ``mqtt:`` with a clean start (MQTT 5) or clean session (3.1.1)."""

    def __init__(self, config: MqttConfig) -> None:
        self.config = config

    def __call__(self, client: mqtt.Client) -> None:
        c = self.config
        if c.protocol == "5":
            client.connect_async(c.host, c.port, keepalive=c.keepalive_s, clean_start=True)
        else:
            client.connect_async(c.host, c.port, keepalive=c.keepalive_s)


def attach_sparkplug(node: SparkplugNode | None, events: EventFanout, publisher: Publisher) -> None:
    """The node hears of every event the publisher took; its state goes into the retained status."""
    if node is not None:
        events.add(node)
        publisher.add_status_extra(node.status_fields)


def stop_sparkplug(node: SparkplugNode | None, deadline: float) -> None:
    """At shutdown, after the last event: give the sender until ``deadline`` (time.monotonic()) to send what the
    store holds while born, then stop (NDEATH, disconnect)."""
    if node is None:
        return
    if node.status_fields()["sparkplug"]["state"] == "born":
        node.flush(max(0.0, deadline - time.monotonic() - 1.0))
    node.stop(max(0.5, min(5.0, deadline - time.monotonic())))
