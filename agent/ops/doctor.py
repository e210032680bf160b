"""``edge-agent doctor``: check everything the agent needs, one row per check, each with what to do.

    checks = run_checks(DoctorOptions(config=pathlib.Path("/etc/edge-agent/edge-agent.yaml")))
    print(render_table(checks)); sys.exit(exit_code(checks))

Checks, in order (a failed config stops the rest, since they all read it):

* ``config``: the file parses and validates (every problem with its field and line);
  the MQTT password credential exists where the unit's ``LoadCredential=`` reads it.
* ``model``: the ONNX file loads as a detector or classifier and runs one inference (skipped, said so,
  when every camera is in learn mode: no model runs).
* ``model gate``: an INT8 model has a passing accuracy gate record for this very file.
* ``onnxruntime``: the configured execution providers are in this build, and which ones the
  model uses; each GPU provider (CUDA, TensorRT) is tried on a one-node model to see that it
  really runs (ONNX Runtime falls back to the CPU silently when CUDA libraries are missing).
  With ``model.runtime: tensorrt``: ``tensorrt``, the module, the GPU and the engine cache
  (the ``model`` row then shows the engine, built first if the cache had none).
* ``camera <id>``: each camera opens and gives one frame within the timeout (in parallel).
* ``mqtt``: the broker accepts a connection with the configured TLS and credentials
  (a separate client id, so a running agent's session is not taken over).
* ``gateway``: the escalation gateway's gRPC health (when ``escalation.gateway`` is set),
  with the short reason it gives when NOT_SERVING ("VLM unreachable", "model not available"; the
  gateway tells callers no more than that: the details are in its log).
* ``metrics``: ``metrics.listen`` is free, or a running agent answers ``/healthz`` there.

Statuses: OK, WARN (works, but look at it), FAIL (the agent will not work), SKIP (not
configured). :func:`exit_code` is 1 when any check failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal

from agent.config.models import AgentConfig, CameraConfig, MqttConfig
from agent.config.plaintext import agent_plaintext_channels
from agent.errors import ConfigError, EdgeAgentError
from agent.redact import redact

__all__ = ["Check", "DoctorOptions", "exit_code", "render_json", "render_table", "run_checks"]

Status = Literal["OK", "WARN", "FAIL", "SKIP"]

DEFAULT_CREDENTIALS_DIR = pathlib.Path("/etc/edge-agent/credentials")
"""Where the shipped unit's LoadCredential= reads the secrets from (systemd/edge-agent.service)."""

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_ESCALATION_SERVICE = "edge_agent.v1.Escalation"


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    todo: str = ""

    def __post_init__(self) -> None:  # every text a check shows passes the one redaction helper
        object.__setattr__(self, "detail", redact(self.detail))
        object.__setattr__(self, "todo", redact(self.todo))


@dataclasses.dataclass(frozen=True)
class DoctorOptions:
    config: pathlib.Path | None = None
    credentials_dir: pathlib.Path | None = None  # default: $CREDENTIALS_DIRECTORY, else DEFAULT_CREDENTIALS_DIR
    timeout_s: float = 12.0  # per camera / broker / gateway
    env: Mapping[str, str] | None = None  # default: os.environ


def run_checks(options: DoctorOptions) -> list[Check]:
    env = os.environ if options.env is None else options.env
    checks: list[Check] = []
    config = _check_config(options, env, checks)
    if config is None:
        return checks
    if config.needs_model:
        checks += _check_model(config)
        checks += _check_providers(config)
    else:  # every camera learns: no model is loaded, so none is checked
        checks.append(Check("model", "OK", "none: every camera is in learn mode (model: null or mode: learn); a "
                             "sample of their frames goes to the VLM"))
    checks += _check_cameras(config.cameras, options.timeout_s)
    connack: dict[str, Any] = {}
    checks.append(_check_mqtt(config, options.timeout_s, connack))
    if "reason" in connack and not connack["reason"].is_failure:
        checks.append(_check_broker_limits(config, connack.get("props")))
    checks += _check_gateway(config, options.timeout_s)
    checks += [Check("plain text", "WARN", warning) for warning in agent_plaintext_channels(config)]
    checks.append(_check_metrics(config))
    return checks


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def render_table(checks: list[Check]) -> str:
    """``CHECK  STATUS  DETAIL`` rows; a row's "what to do" on the line below it, after an arrow."""
    width = max([len("CHECK"), *(len(c.name) for c in checks)])
    lines = [f"{'CHECK':<{width}}  STATUS  DETAIL"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.status:<6}  {c.detail}")
        if c.todo:
            lines.append(f"{'':<{width}}  {'':<6}  -> {c.todo}")
    failed = sum(c.status == "FAIL" for c in checks)
    warned = sum(c.status == "WARN" for c in checks)
    lines.append("")
    lines.append(f"{len(checks)} checks: {failed} failed, {warned} warning(s)" if failed or warned
                 else f"{len(checks)} checks: all fine")
    return "\n".join(lines) + "\n"


def render_json(checks: list[Check]) -> str:
    return json.dumps([dataclasses.asdict(c) for c in checks], indent=2) + "\n"


# -- config ------------------------------------------------------------------------------------------


def _check_config(options: DoctorOptions, env: Mapping[str, str], checks: list[Check]) -> AgentConfig | None:
    from agent.config.loader import load_model, resolve_runtime_paths

    path = options.config or (pathlib.Path(env["EDGE_AGENT_CONFIG"]) if env.get("EDGE_AGENT_CONFIG") else None)
    try:
        config = load_model(AgentConfig, path, env)
    except ConfigError as exc:
        checks.append(Check("config", "FAIL", f"{exc.source}: " + "; ".join(exc.problems),
                            "fix the fields named (`edge-agent config check FILE` lists them with line numbers)"))
        return None
    if path is None:
        checks.append(Check("config", "WARN", "no config file given: checking the built-in defaults",
                            "pass --config /etc/edge-agent/edge-agent.yaml (or set $EDGE_AGENT_CONFIG)"))
    else:
        checks.append(Check("config", "OK", f"{path}: valid"))
    name = config.mqtt.password_credential
    if name is not None:
        creds = pathlib.Path(env["CREDENTIALS_DIRECTORY"]) if env.get("CREDENTIALS_DIRECTORY") else (
            options.credentials_dir or DEFAULT_CREDENTIALS_DIR)
        secret = creds / name
        try:
            ok = bool(secret.read_text(encoding="utf-8").splitlines()[:1])
            problem = "" if ok else "is empty"
        except (OSError, UnicodeDecodeError) as exc:
            ok, problem = False, f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
        if not ok:
            checks.append(Check("mqtt credential", "FAIL", f"mqtt.password_credential {name!r}: {secret} {problem}",
                                f"write the broker password there (sudo install -m 0600 /dev/stdin {secret}) or "
                                "pass --credentials-dir DIR"))
        else:
            checks.append(Check("mqtt credential", "OK", f"{secret}: present"))
        env = {**env, "CREDENTIALS_DIRECTORY": str(creds)}
    try:
        return resolve_runtime_paths(config, env)
    except ConfigError as exc:  # not expected after the credential check above; reported, not raised
        checks.append(Check("config", "FAIL", "; ".join(exc.problems), "fix the fields named"))
        return None


# -- model and ONNX Runtime ----------------------------------------------------------------------------


def model_problems(config: AgentConfig) -> list[str]:
    """What keeps the agent from starting with ``config.model`` (a file that is no ONNX prefilter, a refused
    gate record), as ``edge-agent config check`` lists it; the doctor's model checks, failures only."""
    return [f"model.path: {c.detail}" for c in _check_model(config) if c.status == "FAIL"]


def _check_model(config: AgentConfig) -> list[Check]:
    from agent.ops.health import warm_up
    from agent.prefilter.factory import open_prefilter
    from agent.prefilter.gate_record import check_gate, file_precision
    from agent.prefilter.model_info import file_digest

    path = config.model.path
    try:
        model = open_prefilter(path, config.model)
        precision = file_precision(path)
        facts = warm_up(model, None, precision)
    except EdgeAgentError as exc:
        return [Check("model", "FAIL", str(exc), "set model.path to an ONNX prefilter (the shipped one is "
                      "models/conveyor-yolov8n.int8.onnx); `edge-agent models info FILE` shows what a file is")]
    info = model.info
    checks = [Check("model", "OK", f"{path}: {info.model_id}, {info.task}, {len(info.names)} classes, "
                    f"{info.input_w}x{info.input_h}, {precision}; one inference {facts.warm_up_ms:.0f} ms on "
                    f"{', '.join(facts.providers) or '?'}")]
    checks.append(_model_threads_row(config, getattr(model, "concurrent_runs", 1)))
    gate = check_gate(path, file_digest(path), precision)
    if gate.ok:
        checks.append(Check("model gate", "OK", gate.detail))
    else:
        required = config.model.require_gate
        checks.append(Check("model gate", "FAIL" if required else "WARN",
                            gate.detail + (" (model.require_gate is on: the agent refuses to start)" if required
                                           else " (the agent starts anyway and logs a warning)"),
                            f"edge-agent models quantize FP32_MODEL --calib FRAMES_DIR writes {path.name} with its "
                            "gate record; or use the FP32 model"))
    return checks


def _model_threads_row(config: AgentConfig, runs: int) -> Check:
    """How many CPU threads the model asks for (runs at once x intra-op threads each) against the cores."""
    cores = os.cpu_count() or 1
    if config.model.runtime != "onnxruntime" or list(config.model.providers) != ["CPUExecutionProvider"]:
        return Check("model threads", "SKIP", f"{runs} run(s) at once; the model runs on a GPU (model.providers, "
                     "model.runtime), so CPU threads matter little")
    threads = config.model.intra_op_threads or cores  # 0: ONNX Runtime's choice, one per core
    detail = (f"{runs} run(s) at once x {threads} intra-op thread(s) = {runs * threads} model threads on "
              f"{cores} core(s)")
    if runs * threads > cores:
        return Check("model threads", "WARN", detail + ": more than the cores, so each run waits for a core and "
                     "no more frames get through", f"set model.concurrent_runs x model.intra_op_threads to at most "
                     f"{cores} (leave intra_op_threads out: it then shares the cores among the runs)")
    return Check("model threads", "OK", detail)


def _check_providers(config: AgentConfig) -> list[Check]:
    import onnxruntime as ort

    from agent.prefilter.providers import AUTO, AUTO_ORDER

    if config.model.runtime == "tensorrt":
        return [Check("onnxruntime", "SKIP", f"onnxruntime {ort.__version__}: not used for the model "
                      "(model.runtime: tensorrt)"), _check_tensorrt(config)]
    available = list(ort.get_available_providers())
    configured = list(config.model.providers)
    auto = configured == [AUTO]
    wanted = ([p for p in AUTO_ORDER if p in available] or [AUTO_ORDER[-1]]) if auto else configured
    usable = [p for p in wanted if p in available]
    missing = [] if auto else [p for p in wanted if p not in available]
    gpu_wanted = [p for p in wanted if p in _GPU_PROVIDERS]
    checks: list[Check] = []
    detail = (f"onnxruntime {ort.__version__}; available: {', '.join(available)}; configured: "
              f"{', '.join(configured)}; the model uses: {', '.join(usable) or 'none'}")
    if not usable:
        checks.append(Check("onnxruntime", "FAIL", detail + "; none of the configured providers is available",
                            "add CPUExecutionProvider to model.providers, or install the build that has them "
                            "(pip install 'edge-agent[gpu]' for CUDA/TensorRT)"))
    elif missing:
        checks.append(Check("onnxruntime", "WARN", detail + f"; not in this build, skipped: {', '.join(missing)}",
                            "pip install 'edge-agent[gpu]' (onnxruntime-gpu) for CUDA/TensorRT, or remove them "
                            "from model.providers"))
    else:
        checks.append(Check("onnxruntime", "OK", detail))
    gpus = [p for p in _GPU_PROVIDERS if p in available]
    if not gpus:
        if gpu_wanted:
            return checks  # the row above already says what to do
        checks.append(Check("gpu", "OK", "CPU-only onnxruntime build: no CUDA/TensorRT providers (none configured)"))
        return checks
    for provider in gpus:
        problem = _try_provider(provider)
        role = "configured" if provider in wanted else "not in model.providers"
        if problem is None:
            checks.append(Check(f"gpu {provider.removesuffix('ExecutionProvider')}", "OK",
                                f"{provider} runs ({role})"))
        else:
            checks.append(Check(f"gpu {provider.removesuffix('ExecutionProvider')}",
                                "FAIL" if provider in wanted else "WARN", f"{provider} is in the build but does not "
                                f"run: {problem}", "check the NVIDIA driver (nvidia-smi), the CUDA/cuDNN/TensorRT "
                                "libraries onnxruntime-gpu needs, and the unit's DeviceAllow=char-nvidia*"))
    return checks


def _check_tensorrt(config: AgentConfig) -> Check:
    """model.runtime tensorrt: the tensorrt module, the CUDA binding and the GPU, and the engine cache."""
    from agent.prefilter.providers import engine_cache_root
    from agent.prefilter.tensorrt.platform import probe_platform

    try:
        platform = probe_platform(config.model.gpu_device)
    except EdgeAgentError as exc:
        return Check("tensorrt", "FAIL", str(exc), "install TensorRT 10 (pip install 'edge-agent[tensorrt]', or "
                     "JetPack's python3-libnvinfer on a Jetson), or set model.runtime: onnxruntime")
    cache = engine_cache_root(config.model.engine_cache_dir, os.environ)
    plans = sorted(cache.glob("*.plan")) if cache.is_dir() else []
    return Check("tensorrt", "OK", f"TensorRT {platform.tensorrt_version} on {platform.gpu_name} (sm "
                 f"{platform.compute_capability}, device {platform.device_id}); engine cache {cache}: "
                 f"{len(plans)} plan(s)")


def _try_provider(provider: str) -> str | None:
    """None when a one-node model runs on ``provider`` (without falling back to the CPU); else why not."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                       providers=[provider, "CPUExecutionProvider"])
        active = session.get_providers()
        if not active or active[0] != provider:
            return f"onnxruntime fell back to {', '.join(active)} (the provider's libraries failed to load)"
        session.run(None, {"x": np.ones((1, 4), np.float32)})
    except Exception as exc:  # noqa: BLE001  onnxruntime raises its own untyped errors; reported, not raised
        return str(exc).strip().splitlines()[0][:300]
    return None


# -- cameras ------------------------------------------------------------------------------------------


def _check_cameras(cameras: list[CameraConfig], timeout_s: float) -> list[Check]:
    results: dict[str, Check] = {}
    threads = [threading.Thread(target=_probe_camera, args=(cam, results), name=f"doctor-{cam.id}", daemon=True)
               for cam in cameras]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    out: list[Check] = []
    for cam in cameras:

        check = results.get(cam.id)
        if check is None:
            check = Check(f"camera {cam.id}", "FAIL", f"{redact(cam.source)}: no frame within {timeout_s:g} s "
                          "(the open or the first read did not return)",
                          "check that the camera is powered and reachable and the URL/device is right")
        out.append(check)
    return out


def _probe_camera(cam: CameraConfig, results: dict[str, Check]) -> None:
    from agent.capture.sources import open_source
    from agent.errors import SourceError

    name = f"camera {cam.id}"
    shown = redact(cam.source)
    todo = ("check the URL, credentials and network (try it in VLC or ffplay)" if "://" in cam.source
            and not cam.source.startswith("synthetic://") else
            "check the device/file exists; under systemd the unit needs DeviceAllow=char-video4linux and "
            "SupplementaryGroups=video; a camera held by the running agent is busy: stop the agent first")
    t0 = time.monotonic()
    try:
        source = open_source(cam.source)
    except SourceError as exc:
        results[cam.id] = Check(name, "FAIL", str(exc), "fix cameras[].source")
        return
    try:
        source.open()
        item = source.read()
    except SourceError as exc:
        results[cam.id] = Check(name, "FAIL", str(exc), todo)
        return
    except Exception as exc:  # noqa: BLE001  a decoder's own error: reported as the camera's problem
        results[cam.id] = Check(name, "FAIL", f"{shown}: {type(exc).__name__}: {exc}", todo)
        return
    finally:
        with contextlib.suppress(Exception):  # closing after a failure: the failure is what is reported
            source.close()
    ms = (time.monotonic() - t0) * 1000.0
    if item is None or item.image is None:
        what = "the source ended before its first frame" if item is None else "the first frame is corrupt"
        results[cam.id] = Check(name, "FAIL", f"{shown}: opened, but {what}", todo)
        return
    h, w = item.image.shape[:2]
    results[cam.id] = Check(name, "OK", f"{shown}: {w}x{h} frame in {ms:.0f} ms"
                            + ("" if source.is_live else " (not live: a file or synthetic source)"))


# -- MQTT -----------------------------------------------------------------------------------------------


def _check_mqtt(config: AgentConfig, timeout_s: float, answer: dict[str, Any] | None = None) -> Check:
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


def _check_broker_limits(config: AgentConfig, props: Any) -> Check:
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


def _check_gateway(config: AgentConfig, timeout_s: float) -> list[Check]:
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


# -- metrics endpoint -------------------------------------------------------------------------------------


def _check_metrics(config: AgentConfig) -> Check:
    from agent.ops.endpoint import split_listen

    if not config.metrics.enabled:
        return Check("metrics", "SKIP", "metrics.enabled is false: no /metrics or /healthz")
    host, port = split_listen(config.metrics.listen)
    if port == 0:
        return Check("metrics", "OK", f"{config.metrics.listen}: a free port is picked at start")
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as reply:
            code, body = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        code, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError):
            return Check("metrics", "OK", f"{config.metrics.listen}: free (no agent running there now)")
        return Check("metrics", "WARN", f"{url}: {reason}", "check metrics.listen")
    try:
        doc = json.loads(body)
        status = doc["status"]
    except (ValueError, KeyError, TypeError):
        return Check("metrics", "WARN", f"{config.metrics.listen}: another program answers there (HTTP {code}); the "
                     "agent would run without /metrics", "choose a free metrics.listen")
    if code == 200:
        return Check("running agent", "OK", f"{url}: {status}, {doc.get('inspected', '?')} frames inspected")
    return Check("running agent", "FAIL", f"{url}: {status}: " + "; ".join(doc.get("problems", [])),
                 "journalctl -u edge-agent -e shows the details")
