"""``edge-agent doctor``'s checks over the network: the MQTT broker (and the limits it announces) and the
escalation gateway's gRPC health, with the models its Ollama has."""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

from agent.config.models import AgentConfig, MqttConfig
from agent.errors import ConfigError, EdgeAgentError
from agent.ops.check import Check

_ESCALATION_SERVICE = "edge_agent.v1.Escalation"


# -- MQTT -----------------------------------------------------------------------------------------------


def check_mqtt(config: AgentConfig, timeout_s: float, answer: dict[str, Any] | None = None) -> Check:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.publish.mqtt_publisher import diagnose_connection, tls_context_for

    m: MqttConfig = config.mqtt
    where = f"{m.url}"
    try:
        tls = tls_context_for(m)
        password = None
        if m.password_file is not None:
            password = m.password_file.read_text(encoding="utf-8").splitlines()[0]
    except (EdgeAgentError, OSError, IndexError) as exc:
        return Check("mqtt", "FAIL", f"{where}: {exc}", "fix mqtt.tls / the password file named")
    v5 = m.protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-agent-doctor-{config.device_id}-{os.getpid()}",
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    if m.username is not None:
        client.username_pw_set(m.username, password)
    if tls is not None:
        client.tls_set_context(tls)
    answer = {} if answer is None else answer  # the CONNACK's reason and properties, for the limits check
    done = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, props: Any) -> None:
        answer["reason"], answer["props"] = reason, props
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(m.host, m.port, keepalive=max(5, min(60, m.keepalive_s)))
    except (OSError, ValueError) as exc:
        why = diagnose_connection(m.host, m.port, tls, timeout=min(5.0, timeout_s)) if isinstance(exc, OSError) \
            else str(exc)
        client._reset_sockets()  # noqa: SLF001  paho keeps its wake-up socket pair otherwise
        return Check("mqtt", "FAIL", f"cannot connect to {m.host}:{m.port}: {why}",
                     "is the broker running and reachable (systemctl status mosquitto; firewall)? "
                     "is mqtt.url right?")
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return Check("mqtt", "FAIL", f"{m.host}:{m.port} accepted TCP but sent no CONNACK within {timeout_s:g} s",
                         "is it an MQTT broker, and does it expect TLS (mqtts://) or plain (mqtt://)?")
        reason = answer["reason"]
        if reason.is_failure:
            return Check("mqtt", "FAIL", f"broker {m.host}:{m.port} refused the connection: {reason}",
                         "check mqtt.username and the password (credential or file), and the broker's ACL")
        auth = f"as {m.username}" if m.username else "anonymously"
        return Check("mqtt", "OK", f"connected to {m.host}:{m.port} {auth} (MQTT {m.protocol}"
                     + (", TLS" if tls is not None else "") + ")")
    finally:
        client.disconnect()
        client.loop_stop()
        client._reset_sockets()  # noqa: SLF001


def check_broker_limits(config: AgentConfig, props: Any) -> Check:
    """The broker's announced limits against the largest message this config can produce."""
    from agent.publish.limits import UNANNOUNCED, BrokerLimits
    from agent.publish.sizes import largest_messages

    limits = BrokerLimits.from_connack(props) if config.mqtt.protocol == "5" else UNANNOUNCED
    largest = largest_messages(config)
    sizes = ", ".join(f"{what} {size} bytes" for what, size in largest)
    detail = f"{limits.describe()}; largest messages of this config: {sizes}"
    todo = []
    limit = limits.max_packet_size
    if limit is not None:
        too_big = [what for what, size in largest if size > limit]
        if any(not w.startswith("snapshot") for w in too_big):
            todo.append(f"{', '.join(too_big)} exceed the broker's maximum packet size of {limit} bytes: they would go "
                        "to the outbox's dead letters; raise the broker's limit (max_packet_size)")
        elif too_big:
            todo.append(f"snapshots above {limit} bytes will be re-encoded smaller (or dropped if they cannot fit); "
                        "lower snapshots.max_bytes or max_width, or raise the broker's limit")
    todo += limits.costs()
    if not limits.announced:
        todo.append("MQTT 3.1.1: the broker's limits are unknown; a packet it refuses closes the connection "
                    "(see docs/broker-limits.md); use protocol 5 if the broker speaks it")
    failed = limit is not None and any(size > limit and not w.startswith("snapshot") for w, size in largest)
    return Check("mqtt limits", "FAIL" if failed else "WARN" if todo else "OK", detail, "; ".join(todo))


# -- gateway and Ollama -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GatewayAnswer:
    """One gateway's health answer: ``status`` SERVING / NOT_SERVING / an error code name; ``reason`` from
    the trailing metadata (empty when the gateway does not send it)."""

    target: str
    status: str
    reason: str


def ask_gateway_health(target: str, credentials: Any = None, options: list[tuple[str, Any]] | None = None,
                       timeout_s: float = 5.0) -> GatewayAnswer:
    """The escalation service's health at ``target`` (a gRPC target), with the reason it gives."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from agent.wire.health import REASON_KEY

    channel = (grpc.secure_channel(target, credentials, options=options or []) if credentials is not None
               else grpc.insecure_channel(target, options=options or []))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply, call = stub.Check.with_call(health_pb2.HealthCheckRequest(service=_ESCALATION_SERVICE),
                                               timeout=timeout_s, wait_for_ready=False)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            return GatewayAnswer(target, code.name if code is not None else "ERROR", details or "")
        trailing = {k: v for k, v in (call.trailing_metadata() or ())}
    reason = trailing.get(REASON_KEY, b"")
    reason_text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return GatewayAnswer(target, status, reason_text)


def _gateway_targets(target: str) -> list[str]:
    """A comma list (``ipv4:a:1,b:2``) is checked gateway by gateway; anything else as one target."""
    scheme, _, rest = target.partition(":")
    if scheme in ("ipv4", "ipv6") and "," in rest:
        return [f"{scheme}:{item}" for item in rest.split(",")]
    return [target]


def check_gateway(config: AgentConfig, timeout_s: float) -> list[Check]:
    escalation = getattr(config, "escalation", None)
    target = getattr(escalation, "target", None) if escalation is not None else None
    if escalation is None or target is None:
        return [Check("gateway", "SKIP", "escalation off (no escalation.gateway): uncertain frames are published "
                      "with status unavailable")]
    credentials = None
    options: list[tuple[str, Any]] = []
    tls = getattr(escalation, "tls", None)
    if tls is not None:
        from agent.escalation.client import channel_credentials

        try:
            credentials = channel_credentials(tls)
        except ConfigError as exc:
            return [Check("gateway", "FAIL", "; ".join(exc.problems), "fix escalation.tls")]
        if getattr(tls, "server_name", None):
            options.append(("grpc.ssl_target_name_override", tls.server_name))
    checks: list[Check] = []
    for one in _gateway_targets(target):
        answer = ask_gateway_health(one, credentials, options, min(timeout_s, 10.0))
        name = "gateway" if one == target else f"gateway {one}"
        if answer.status == "SERVING":
            checks.append(Check(name, "OK", f"{one}: SERVING"))
        elif answer.status == "NOT_SERVING":
            checks.append(Check(name, "FAIL", f"{one}: NOT_SERVING: {answer.reason or 'no reason given'}",
                                "on the gateway host: is `ollama serve` running and the model pulled "
                                "(`ollama pull llava:7b`)? journalctl -u edge-agent-gateway"))
        elif answer.status == "UNIMPLEMENTED":
            checks.append(Check(name, "FAIL", f"{one}: answers gRPC but has no health service: not an edge-agent "
                                "gateway", "point escalation.gateway at `edge-agent gateway`"))
        else:
            checks.append(Check(name, "FAIL", f"{one}: {answer.status}: {answer.reason}",
                                "is `edge-agent gateway` running there (systemctl status edge-agent-gateway), "
                                "and does escalation.tls match its TLS setting?"))
    return checks
