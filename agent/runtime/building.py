"""Building the agent's parts from the config, each failing with an error that says what is wrong before
anything runs: the prefilter (checked against the triage config and its INT8 gate record, warmed up), the
store-and-forward publisher, and the relay of a grabber's state changes to the status board."""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Callable

from agent.capture.grabber import Grabber
from agent.config.loader import resolve_runtime_paths
from agent.config.models import AgentConfig, CameraConfig
from agent.core.ports import ConcurrentRuns, Prefilter
from agent.errors import ConfigError, ModelError, SourceError
from agent.prefilter.classifier import ImageClassifier
from agent.prefilter.factory import open_prefilter
from agent.prefilter.gate_record import GateStatus, check_gate, file_precision
from agent.prefilter.model_info import file_digest
from agent.prefilter.warmup import ModelFacts, warm_up
from agent.publish.camera_status import CameraStatusBoard
from agent.publish.mqtt_publisher import MqttPublisher
from agent.publish.outbox import Outbox
from agent.publish.reliable import ReliablePublisher
from agent.publish.topics import stats_topic

__all__ = [
    "CameraStateListener", "StateRelay", "build_publisher", "check_model_gate", "check_pass_label", "digest_or_none",
    "grabber_for_reload", "load_model",
]

log = logging.getLogger(__name__)


def load_model(config: AgentConfig) -> tuple[Prefilter, ModelFacts, str]:
    """Open ``config.model``, check it against the triage config and its INT8 gate record, warm it up:
    (the model, what is known of it, the file's digest). ModelError/ConfigError saying what is wrong."""
    path = config.model.path
    model = open_prefilter(path, config.model)
    if isinstance(model, ImageClassifier):
        check_pass_label(config, model.info.names, str(model.info.path))
    log.info("model loaded: %s (%s); %d run(s) at once, %d intra-op thread(s) each", model.info.model_id,
             model.info.task, model.concurrent_runs if isinstance(model, ConcurrentRuns) else 1,
             config.model.intra_op_threads)
    gate = check_model_gate(model.info.path, config.model.require_gate)
    facts = warm_up(model, gate, file_precision(model.info.path))  # one inference on a blank frame
    return model, facts, file_digest(model.info.path)


def check_pass_label(config: AgentConfig, names: tuple[str, ...], model: str) -> None:
    """A classifier's triage needs to know its good class: every triage band's ``pass_label``
    must be one of the model's classes."""
    bands = [("triage", config.triage)] + [(f"cameras[{i}].triage", c.triage) for i, c in enumerate(config.cameras)
                                           if c.triage is not None]
    problems = [f"{where}.pass_label: {band.pass_label!r} is not a class of the classifier {model} "
                f"({', '.join(names)}); set it to the class that means a good frame"
                for where, band in bands if band.pass_label not in names]
    if problems:
        raise ConfigError(problems)


def build_publisher(config: AgentConfig) -> ReliablePublisher:
    """Outbox + MQTT connection from the config (reads the password file, builds TLS)."""
    path = resolve_runtime_paths(config).outbox.path or pathlib.Path("outbox.sqlite")  # always filled in
    outbox = Outbox(path, max_rows=config.outbox.max_rows, max_bytes=config.outbox.max_bytes,
                    synchronous=config.outbox.synchronous)
    config = resolve_runtime_paths(config)
    try:
        mqtt = MqttPublisher.from_config(config.mqtt, config.device_id)
    except Exception:
        outbox.close()
        raise
    return ReliablePublisher(outbox, mqtt, topic_prefix=config.mqtt.topic_prefix, inflight=config.outbox.inflight,
                             refused_tries=config.outbox.refused_tries,
                             refused_backoff_s=min(30.0, config.outbox.refused_backoff_s),
                             stats_topic=stats_topic(config.mqtt.topic_prefix, config.device_id))


def check_model_gate(path: pathlib.Path, required: bool) -> GateStatus:
    """Say at start-up whether an INT8 model passed its accuracy gate; refuse if ``required``."""
    status = check_gate(path, file_digest(path), file_precision(path))
    if status.state == "passed":
        log.info("%s", status.detail)
    elif not status.ok:
        if required:
            raise ModelError(f"{status.detail} (model.require_gate is on)")
        log.warning("%s; starting anyway (set model.require_gate to refuse)", status.detail)
    return status


def grabber_for_reload(index: int, camera: CameraConfig, make: Callable[[CameraConfig], Grabber]) -> Grabber:
    """A grabber for a camera a reload adds or changes; a source spec nobody understands is a config problem."""
    try:
        return make(camera)
    except SourceError as exc:
        raise ConfigError([f"cameras[{index}].source (camera {camera.id}): {exc}"]) from exc


def digest_or_none(path: pathlib.Path) -> str | None:
    """The file's digest; None when it cannot be read (gone: loading it says so)."""
    try:
        return file_digest(path)
    except OSError:
        return None  # gone: loading it says so


CameraStateListener = Callable[[str, str, "str | None"], None]


class StateRelay:
    """One grabber's ``on_state``: the change goes to the status board, reported under the grabber's own key
    (so a replaced or removed grabber cannot overwrite its camera's entry), then to the service's listener."""

    def __init__(self, board: CameraStatusBoard, listener: CameraStateListener | None) -> None:
        self.board = board
        self.listener = listener
        self.grabber: Grabber | None = None  # set once the grabber exists; it reports only after start()

    def __call__(self, camera_id: str, state: str, reason: str | None) -> None:
        self.board.report(self.grabber, camera_id, state, reason)
        if self.listener is not None:
            self.listener(camera_id, state, reason)
