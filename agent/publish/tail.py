"""Watch tag events on a broker, one readable line each (``edge-agent tail``).

  2026-11-22T03:04:05Z  box1/cam1  #42  defect     prefilter  scratch:0.91 dent:0.47?  escalation=not_needed

Columns: capture time, device/camera, frame sequence, verdict, decided_by,
tags as ``label:confidence`` (a trailing ``?`` marks an uncertain tag), and the
escalation status (with the VLM model and latency when it answered).
With ``validate=True`` every payload is checked against the JSON Schema and an
invalid one is shown as ``INVALID <topic>`` followed by one line per problem.
A payload that is not JSON is always shown as invalid. Every line is passed through
:func:`printable`: terminal control characters in a broker's strings are shown escaped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import PublishError
from agent.publish.mqtt_publisher import route_paho_log
from agent.publish.schema import validate_payload
from agent.publish.topics import DEFAULT_PREFIX, tags_filter

_log = logging.getLogger(__name__)

Writer = Callable[[str], object]


@dataclasses.dataclass
class TailCounts:
    """Filled in by :func:`tail` when passed as ``counts``."""

    shown: int = 0  # events shown as event lines (the return value of tail())
    invalid: int = 0  # payloads shown as INVALID (not JSON, or schema problems with validate=True)
    filtered: int = 0  # events received but hidden by the verdict filter


def printable(text: str) -> str:
    """``text`` safe for a terminal: control and format characters (ESC, CR, BEL, C1 controls, bidi
    overrides, zero-width characters) shown as ``\\xNN``/``\\uNNNN`` escapes, so a broker's string cannot move
    the cursor, recolour or rewrite what is shown."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") for c in text)


PASSWORD_ENV = "EDGE_TAIL_PASSWORD"


def broker_login(username: str | None, password_file: pathlib.Path | None,
                 env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(username, password) for ``tail``: the password from the first line of ``password_file`` or from
    ``$EDGE_TAIL_PASSWORD`` (never from the command line, where ``ps`` and shell history show it).
    PublishError when a password has no user name or its file cannot be read."""
    password: str | None = None
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise PublishError(f"--password-file {password_file}: cannot read it ({exc}); expected a file whose "
                               "first line is the broker password") from None
        if not lines or not lines[0]:
            raise PublishError(f"--password-file {password_file}: the first line is empty; expected the password")
        password = lines[0]
    elif env.get(PASSWORD_ENV):
        password = env[PASSWORD_ENV]
    if password is not None and not username:
        raise PublishError("a broker password needs a user name: give --username (or EDGE_TAIL_USERNAME)")
    return username or None, password


def plaintext_login(url: str, password: str | None) -> str | None:
    """A warning when ``password`` would cross the network in the clear (``mqtt://`` to another host)."""
    from agent.config.plaintext import is_loopback_host

    parsed = urllib.parse.urlsplit(url)
    if password is None or parsed.scheme != "mqtt" or is_loopback_host(parsed.hostname or ""):
        return None
    return (f"--broker {url} is plain text to another host: the password crosses the network in the clear; "
            "use mqtts://")


def _stdout_writer(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _tag_text(tag: object) -> str:
    if not isinstance(tag, dict):
        return "?"
    confidence = tag.get("confidence")
    number = f"{confidence:.2f}" if isinstance(confidence, (int, float)) else "?"
    return f"{tag.get('label', '?')}:{number}{'?' if tag.get('state') == 'uncertain' else ''}"


def format_event(payload: dict[str, Any]) -> str:
    """One line for a tag event payload (tolerates missing or mistyped fields)."""
    tags = payload.get("tags")
    tag_text = " ".join(_tag_text(t) for t in tags) if isinstance(tags, list) and tags else "-"
    esc = payload.get("escalation")
    esc = esc if isinstance(esc, dict) else {}
    detail = [str(esc["model"])] if esc.get("model") else []
    if isinstance(esc.get("latency_ms"), (int, float)):
        detail.append(f"{esc['latency_ms']:.0f}ms")
    if esc.get("reason"):
        detail.append(str(esc["reason"]))
    esc_text = f"escalation={esc.get('status', '?')}" + (f"({' '.join(detail)})" if detail else "")
    where = f"{payload.get('device', '?')}/{payload.get('camera', '?')}"
    verdict = f"{payload.get('verdict', '?')!s:<9}  {payload.get('decided_by', '?')!s:<9}"
    when, sequence = payload.get("captured_at", "?"), payload.get("sequence", "?")
    return f"{when}  {where}  #{sequence}  {verdict}  {tag_text}  {esc_text}"


def tail(
    url: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    device: str = "+",
    camera: str | None = None,
    verdict: str | None = None,
    validate: bool = False,
    count: int | None = None,
    timeout: float | None = None,
    out: Writer | None = None,
    username: str | None = None,
    password: str | None = None,
    counts: TailCounts | None = None,
    on_subscribed: Callable[[], object] | None = None,
) -> int:
    """Subscribe to ``<prefix>/<device>/<camera>/tags`` and write one line per event.

    Args:
        url: broker, ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]`` (system CAs).
        prefix: topic prefix, as in ``MqttConfig.topic_prefix``.
        device: one device id, or ``+`` for all.
        camera: one camera id, or None for all.
        verdict: show only events with this verdict (``pass``/``defect``/``uncertain``).
        validate: check each payload against the JSON Schema; invalid ones are shown
            with their problems and counted in ``counts.invalid``.
        count: stop after this many messages shown (events plus invalid payloads).
        timeout: stop after this many seconds. With neither ``count`` nor ``timeout``
            it runs until interrupted (KeyboardInterrupt propagates after a clean disconnect).
        out: called with each line (no newline); default writes to stdout.
        username, password: broker credentials.
        counts: optional :class:`TailCounts`, updated as messages arrive.
        on_subscribed: called once the broker has confirmed the subscription.

    Returns the number of events shown (invalid payloads not included). Raises PublishError for a bad URL, a
    broker that cannot be reached, or one that refused the connection or the subscription.
    """
    sink = out or _stdout_writer
    tally = counts if counts is not None else TailCounts()
    scheme, host, port = _broker_address(url)
    session = _Session(tags_filter(prefix, device, camera or "+"), f"{host}:{port}", verdict, validate, count,
                       lambda line: sink(printable(line)), tally, on_subscribed)
    client = _client(session, scheme == "mqtts", username, password)
    shown_before = tally.shown
    try:
        try:
            client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise PublishError(f"cannot connect to broker {host}:{port}: {exc}") from exc
        _run(client, session, None if timeout is None else time.monotonic() + timeout)
        if session.error is not None:
            raise PublishError(session.error)
    finally:
        if client.socket() is not None:
            client.disconnect()  # written at once without a network thread; paho then closes the socket
            if client.socket() is not None:
                client.loop(timeout=0.1)
    return tally.shown - shown_before


def _client(session: _Session, tls: bool, username: str | None, password: str | None) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    route_paho_log(client, _log.getChild("paho"))
    client.on_connect = session.on_connect
    client.on_subscribe = session.on_subscribe
    client.on_message = session.on_message
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set_context(ssl.create_default_context())
    return client


def _broker_address(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a broker URL; PublishError for anything but mqtt(s)://HOST[:PORT]."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise PublishError(f"{url!r} is not a broker URL; expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    try:
        port = parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)
    except ValueError as exc:
        raise PublishError(f"{url!r} has an invalid port: {exc}") from None
    return parsed.scheme, parsed.hostname, port


def _run(client: mqtt.Client, session: _Session, deadline: float | None) -> None:
    """Run paho's loop until enough is shown, the deadline, or an error; reconnect when the link drops."""
    while not session.done() and session.error is None:
        if deadline is not None and time.monotonic() >= deadline:
            break
        wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
        rc = client.loop(timeout=wait)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and session.error is None:
            _log.warning("lost the connection to %s (%s); reconnecting", session.broker, mqtt.error_string(rc))
            time.sleep(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
            try:
                client.reconnect()
            except OSError as exc:
                _log.warning("reconnect to %s failed: %s", session.broker, exc)


@dataclasses.dataclass
class _Session:
    """One ``tail`` run: what to show, what was shown, and paho's callbacks (run on the loop's thread)."""

    topic_filter: str
    broker: str  # HOST:PORT, for messages
    verdict: str | None
    validate: bool
    count: int | None
    write: Writer  # every string from the broker passes here, escaped
    tally: TailCounts
    on_subscribed: Callable[[], object] | None
    subscribed: bool = False
    error: str | None = None
    shown_total: int = 0  # events and invalid payloads shown

    def done(self) -> bool:
        return self.count is not None and self.shown_total >= self.count

    def on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                   properties: Properties | None) -> None:
        if reason_code.is_failure:
            self.error = f"broker {self.broker} refused the connection: {reason_code} ({reason_code.value})"
            return
        client.subscribe(self.topic_filter, qos=1)

    def on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                     properties: Properties | None) -> None:
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            self.error = f"broker refused the subscription to {self.topic_filter}: {failed[0]}"
            return
        if not self.subscribed:
            self.subscribed = True
            if self.on_subscribed is not None:
                self.on_subscribed()

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.done():
            return
        payload, problems = _read(msg.payload, self.validate)
        if problems:
            self.tally.invalid += 1
            self.shown_total += 1
            self.write(f"INVALID {msg.topic}: {problems[0]}")
            for problem in problems[1:]:
                self.write(f"    {problem}")
            return
        if self.verdict is not None and payload.get("verdict") != self.verdict:
            self.tally.filtered += 1
            return
        self.tally.shown += 1
        self.shown_total += 1
        self.write(format_event(payload))


def _read(raw: bytes | bytearray, validate: bool) -> tuple[dict[str, Any], list[str]]:
    """The payload as a JSON object, and what is wrong with it: a headline then (schema) one line per problem."""
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        return {}, [f"not JSON ({len(raw)} bytes): {exc}"]
    if not isinstance(payload, dict):
        return {}, [f"not a JSON object ({type(payload).__name__})"]
    problems = validate_payload(payload) if validate else []
    return payload, ([f"{len(problems)} problem(s)", *problems] if problems else [])
