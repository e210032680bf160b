"""The connection side of MQTT: the paho client as the config asks for it, TLS context from the config, why a
connection fails (in words), paho's log routed to ours. Used by :mod:`agent.publish.mqtt_publisher`, ``tail``
and ``doctor``."""

from __future__ import annotations

import functools
import logging
import socket
import ssl
import urllib.parse
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config.models import MqttConfig
from agent.errors import PublishError


class _ClosingOnFailedHandshake(ssl.SSLSocket):
    """paho does not close its TLS socket when the handshake fails (client.py, _ssl_wrap_socket):
    with this class the socket closes itself, so a retry loop against a bad CA leaks nothing."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def diagnose_connection(host: str, port: int, tls: ssl.SSLContext | None, timeout: float) -> str:
    """Why a connection to the broker fails, in words: the TCP error, or the TLS handshake error
    (e.g. an unknown CA or a wrong host name), or "TCP and TLS work" (the MQTT layer failed)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return exc.strerror or str(exc)
    if tls is None:
        sock.close()
        return "TCP works; the MQTT connection itself failed"
    ssock = tls.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    try:
        ssock.do_handshake()
        return "TCP and TLS handshake work; the MQTT connection itself failed"
    except ssl.SSLCertVerificationError as exc:
        return f"TLS: the broker's certificate was not accepted ({exc.verify_message}); check mqtt.tls.ca_file"
    except (ssl.SSLError, OSError) as exc:
        return f"TLS handshake failed: {exc}"
    finally:
        ssock.close()


def read_password(config: MqttConfig) -> str | None:
    """The first line of ``mqtt.password_file`` (None without one); PublishError naming the field otherwise."""
    if config.password_file is None:
        return None
    try:
        return config.password_file.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        what = "is empty" if isinstance(exc, IndexError) else f"cannot be read ({exc})"
        raise PublishError(f"mqtt.password_file {config.password_file} {what}; expected a file whose "
                           "first line is the broker password") from exc


def tls_context_for(config: MqttConfig) -> ssl.SSLContext | None:
    """The SSLContext for an ``mqtts://`` URL (None for plain ``mqtt://``)."""
    if urllib.parse.urlsplit(config.url).scheme != "mqtts":
        return None
    tls = config.tls
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls and tls.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise PublishError(f"mqtt.tls.ca_file {tls.ca_file if tls else None}: cannot load CA certificates "
                           f"({exc}); expected a PEM file") from exc
    if tls is not None and tls.cert_file is not None and tls.key_file is not None:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise PublishError(f"mqtt.tls.cert_file/key_file {tls.cert_file}, {tls.key_file}: cannot load the "
                               f"client certificate ({exc}); expected PEM files that belong together") from exc
    if tls is not None and not tls.verify_hostname:
        ctx.check_hostname = False
    return ctx


class _PahoLog(logging.Logger):
    """paho's chatter, sent to ``target`` at DEBUG (see :func:`route_paho_log`)."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__(target.name)
        self._target = target

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(msg, str) and msg.startswith("Caught exception"):
            self._target.error(msg, *args, **kwargs)
        elif self._target.isEnabledFor(logging.DEBUG):
            self._target.debug(msg, *args, **kwargs)


def route_paho_log(client: mqtt.Client, logger: logging.Logger) -> None:
    """Send paho's chatter to ``logger`` at DEBUG.

    paho logs routine conditions at its ERR level (e.g. "Client is not connected"
    on every reconnect attempt); the publisher reports those itself, once. Only an
    exception caught in one of our callbacks stays an error. Through paho's logger (not
    its ``on_log`` callback, for which paho formats every message first: "Sending PUBLISH
    ..., properties=..." cost about 100 µs of CPU a message) a message is formatted only
    when ``logger`` takes DEBUG.
    """
    client.enable_logger(_PahoLog(logger))


class _FixedProperties(Properties):
    """PUBLISH properties that never change: packed once (paho packs a message's properties each time it sends
    it, 6 µs, and making them costs 11 µs), and read-only so that the messages sharing them cannot differ."""

    def __init__(self, content_type: str) -> None:
        super().__init__(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho leaves it untyped
        self.ContentType = content_type
        object.__setattr__(self, "_packed", super().pack())  # type: ignore[no-untyped-call]

    def __setattr__(self, name: str, value: Any) -> None:
        if "_packed" in self.__dict__:
            raise AttributeError(f"shared MQTT properties are read-only (setting {name})")
        super().__setattr__(name, value)  # type: ignore[no-untyped-call]

    def pack(self) -> bytes:
        packed: bytes = self.__dict__["_packed"]
        return packed


@functools.lru_cache(maxsize=16)
def fixed_publish_properties(content_type: str) -> Properties:
    """The MQTT 5 properties of a PUBLISH that carries only ``content_type``: one shared, packed object."""
    return _FixedProperties(content_type)


def make_client(config: MqttConfig, client_id: str, log: logging.Logger, username: str | None,
                password: str | None, tls_context: ssl.SSLContext | None) -> tuple[mqtt.Client, ssl.SSLContext | None]:
    """The publisher's paho client (MQTT 5 or 3.1.1, reconnecting 1 s doubling to 30 s, queue capped at
    ``max_queued``, credentials, TLS for mqtts://), and the TLS context it uses (None without TLS)."""
    if config.protocol == "5":
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                             clean_session=config.session_expiry_s == 0)
    route_paho_log(client, log.getChild("paho"))
    client.suppress_exceptions = True  # a bug in a callback is logged, not the end of the network thread
    client.reconnect_delay_set(1, 30)
    client.max_queued_messages_set(config.max_queued)
    if username is not None:
        client.username_pw_set(username, password)
    context: ssl.SSLContext | None = None
    if urllib.parse.urlsplit(config.url).scheme == "mqtts":
        context = tls_context or ssl.create_default_context()
        context.sslsocket_class = _ClosingOnFailedHandshake
        client.tls_set_context(context)
    return client, context
