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
* ``plc <name>``: each PLC connection a camera writes to accepts a connection and every mapped address reads
  (:mod:`agent.ops.doctor_plc`; reads only).
* ``images``: the audit images' folder is writable, with room above ``images.min_free_bytes`` and for the
  cameras' limits (:mod:`agent.ops.doctor_images`).
* ``metrics``: ``metrics.listen`` is free, or a running agent answers ``/healthz`` there.
* ``opcua server`` (when enabled): the endpoint of the agent's OPC UA server, its users file and certificate,
  and its state: the port free, or a running agent's server answering there (:mod:`agent.ops.doctor_opcua`).

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
from typing import Any

from agent.config.models import AgentConfig, CameraConfig
from agent.config.plaintext import agent_plaintext_channels
from agent.errors import ConfigError, EdgeAgentError
from agent.ops.check import Check
from agent.ops.doctor_images import check_images
from agent.ops.doctor_network import ask_gateway_health as ask_gateway_health  # re-exported
from agent.ops.doctor_network import check_broker_limits, check_gateway, check_mqtt
from agent.ops.doctor_opcua import check_opcua_server
from agent.ops.doctor_plc import check_plcs
from agent.redact import redact

__all__ = ["Check", "DoctorOptions", "exit_code", "render_json", "render_table", "run_checks"]

DEFAULT_CREDENTIALS_DIR = pathlib.Path("/etc/edge-agent/credentials")
"""Where the shipped unit's LoadCredential= reads the secrets from (systemd/edge-agent.service)."""

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


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
    checks.append(check_mqtt(config, options.timeout_s, connack))
    if "reason" in connack and not connack["reason"].is_failure:
        checks.append(check_broker_limits(config, connack.get("props")))
    checks += check_gateway(config, options.timeout_s)
    checks += check_plcs(config, options.timeout_s)
    checks += [Check("plain text", "WARN", warning) for warning in agent_plaintext_channels(config)]
    checks.append(check_images(config, env))
    checks.append(_check_metrics(config))
    if config.opcua_server.enabled:  # a row only where it is configured
        checks.append(check_opcua_server(config, options.timeout_s))
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
    from agent.prefilter.factory import open_prefilter
    from agent.prefilter.gate_record import check_gate, file_precision
    from agent.prefilter.model_info import file_digest
    from agent.prefilter.warmup import warm_up

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
                    f"{info.input_w}x{info.input_h}{_fitted_note(model)}, {precision}; one inference "
                    f"{facts.warm_up_ms:.0f} ms on {', '.join(facts.providers) or '?'}")]
    checks.append(_model_threads_row(config, getattr(model, "concurrent_runs", 1)))
    if config.model.runtime == "auto":
        checks.append(_runtime_choice_row(config))
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


def _runtime_choice_row(config: AgentConfig) -> Check:
    """model.runtime auto: which runtime the probe chose, on which numbers (opening the model ran or read it)."""
    from agent.prefilter.runtime_choice import installed_runtimes, read_choice

    installed = installed_runtimes()
    if len(installed) == 1:
        return Check("model runtime", "OK", f"auto: {installed[0]}, the only runtime installed (no probe)",
                     "pip install 'edge-agent[openvino]' adds OpenVINO; auto then measures both")
    choice = read_choice(config.model.path, config.model)
    if choice is None:
        return Check("model runtime", "WARN", "auto: no probe result is cached for this model and these settings",
                     "edge-agent models probe-runtime MODEL runs it")
    return Check("model runtime", "OK", f"auto chose {choice.describe()}")


def _fitted_note(model: object) -> str:
    """What ``model.input_size: auto`` does with a 1280x960 camera, for a detector that fits frames."""
    from agent.prefilter.detector import YoloDetector
    from agent.prefilter.input_size import fitted_size

    if not isinstance(model, YoloDetector) or model.sizes is None:
        return ""
    h, w = fitted_size(1280, 960, model.info.input_w, model.info.input_h)
    return f" (input_size auto: fitted to each camera, e.g. 1280x960 at {w}x{h})"


def _model_threads_row(config: AgentConfig, runs: int) -> Check:
    """How many CPU threads the model asks for (runs at once x intra-op threads each) against the cores."""
    cores = os.cpu_count() or 1
    if config.model.runtime not in ("onnxruntime", "openvino", "auto") \
            or list(config.model.providers) != ["CPUExecutionProvider"]:
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

    from agent.config.providers import AUTO
    from agent.prefilter.providers import AUTO_ORDER

    if config.model.runtime == "tensorrt":
        return [Check("onnxruntime", "SKIP", f"onnxruntime {ort.__version__}: not used for the model "
                      "(model.runtime: tensorrt)"), _check_tensorrt(config)]
    if config.model.runtime == "openvino":
        return [Check("onnxruntime", "SKIP", f"onnxruntime {ort.__version__}: not used for the model "
                      "(model.runtime: openvino)"), _check_openvino()]
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


def _check_openvino() -> Check:
    """model.runtime openvino: the module loads and sees a CPU."""
    from agent.prefilter.openvino_session import INSTALL_HINT, load_openvino

    try:
        ov = load_openvino()
        core = ov.Core()
        cpu = core.get_property("CPU", "FULL_DEVICE_NAME")
    except EdgeAgentError as exc:
        return Check("openvino", "FAIL", str(exc), f"{INSTALL_HINT}, or set model.runtime: onnxruntime")
    except RuntimeError as exc:  # OpenVINO's own errors (no CPU plugin)
        return Check("openvino", "FAIL", f"OpenVINO {ov.__version__} cannot use the CPU: {exc}",
                     f"reinstall it ({INSTALL_HINT}), or set model.runtime: onnxruntime")
    return Check("openvino", "OK", f"OpenVINO {ov.__version__}; devices {', '.join(core.available_devices)}; "
                 f"CPU {cpu}")


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
    from agent.capture.decoders import camera_source
    from agent.errors import SourceError

    name = f"camera {cam.id}"
    shown = redact(cam.source)
    todo = ("check the URL, credentials and network (try it in VLC or ffplay)" if "://" in cam.source
            and not cam.source.startswith("synthetic://") else
            "check the device/file exists; under systemd the unit needs DeviceAllow=char-video4linux and "
            "SupplementaryGroups=video; a camera held by the running agent is busy: stop the agent first")
    t0 = time.monotonic()
    try:
        source = camera_source(cam)
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
    decoder = getattr(source, "decoder", None)  # which decoder runs (camera.decoder, camera.hwaccel)
    results[cam.id] = Check(name, "OK", f"{shown}: {w}x{h} frame in {ms:.0f} ms"
                            + ("" if source.is_live else " (not live: a file or synthetic source)")
                            + (f"; decoded by {decoder}" if decoder else ""))


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
