"""Typed configuration. Every model rejects unknown keys and is frozen after load.

The defaults run the demo: one synthetic conveyor camera, the shipped detector,
a broker on localhost. See docs/configuration.md for every field.
"""

from __future__ import annotations

import ipaddress
import pathlib
import re
import socket
import urllib.parse
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from agent.config.base import Strict
from agent.config.camera import (  # re-exported
    CameraConfig as CameraConfig,
)
from agent.config.camera import (
    CameraMode as CameraMode,
)
from agent.config.camera import (
    LearnConfig as LearnConfig,
)
from agent.config.camera import (
    TriageConfig as TriageConfig,
)
from agent.config.camera import (
    _check_id as _check_id,
)
from agent.config.escalation import EscalationConfig, RateLimitConfig
from agent.config.images import ImagesConfig
from agent.config.model import (  # re-exported
    DEFAULT_MODEL as DEFAULT_MODEL,
)
from agent.config.model import (
    DEFAULT_PREFILTER as DEFAULT_PREFILTER,
)
from agent.config.model import (
    REPO_MODELS as REPO_MODELS,
)
from agent.config.model import (
    ModelConfig as ModelConfig,
)
from agent.config.model import (
    default_concurrent_runs as default_concurrent_runs,
)
from agent.config.model import (
    default_inference_threads as default_inference_threads,
)
from agent.config.opcua_server import OpcUaServerConfig
from agent.config.plc import PlcConfig, check_camera_plcs
from agent.config.sparkplug import SparkplugConfig
from agent.config.urls import check_broker_url
from agent.taxonomy.model import Taxonomy


class TlsConfig(Strict):
    """TLS for ``mqtts://``. Without ``ca_file`` the system's CAs are trusted."""

    ca_file: pathlib.Path | None = None
    cert_file: pathlib.Path | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: pathlib.Path | None = Field(default=None, description="client key (mutual TLS)")
    verify_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        return self


class MqttConfig(Strict):
    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = "edge"
    client_id: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    max_queued: Annotated[int, Field(ge=1)] = 10000
    session_expiry_s: Annotated[int, Field(ge=0)] = 3600
    username: str | None = None
    password_file: pathlib.Path | None = Field(
        default=None, description="file holding the password (first line); never put the password itself here")
    password_credential: str | None = Field(
        default=None, description="name of a systemd credential (LoadCredential=) holding the password")
    tls: TlsConfig | None = None
    stats_interval_s: Annotated[float, Field(ge=0)] = 60.0

    @model_validator(mode="after")
    def _password_source(self) -> MqttConfig:
        if self.password_file is not None and self.password_credential is not None:
            raise ValueError("give password_file or password_credential, not both")
        if (self.password_file or self.password_credential) and not self.username:
            raise ValueError("a password needs a username")
        if self.tls is not None and urllib.parse.urlsplit(self.url).scheme != "mqtts":
            raise ValueError("tls settings are given but the url is not mqtts://")
        return self

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, v: object) -> object:
        return "5" if v == 5 else v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_broker_url(v)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or any(c in v for c in "+#") or v.startswith("/") or v.endswith("/"):
            raise ValueError(f"topic prefix {v!r} must be non-empty, without '+', '#' or a leading/"
                             "trailing '/'")
        return v

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parsed = urllib.parse.urlsplit(self.url)
        return parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)


class OutboxConfig(Strict):
    """The SQLite store-and-forward queue between inspection and MQTT."""

    path: pathlib.Path | None = Field(
        default=None, description="default: $STATE_DIRECTORY/outbox.sqlite under systemd, else "
        "$XDG_STATE_HOME/edge-agent/outbox.sqlite or ~/.local/state/edge-agent/outbox.sqlite")
    max_rows: Annotated[int, Field(ge=1)] = 100_000
    max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    synchronous: Literal["normal", "full"] = Field(
        default="normal", description="normal survives a crash of the agent; full also a power cut (slower)")
    inflight: Annotated[int, Field(ge=1, le=1000)] = 64
    refused_tries: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3, description="tries of a message the broker refuses (PUBACK reason code >= 0x80) before it "
        "moves to the dead letters; its topic's later messages wait meanwhile, other topics do not")
    refused_backoff_s: Annotated[float, Field(gt=0.0, le=60.0)] = Field(
        default=1.0, description="pause before the first retry of a refused message; doubles per try, at most 30 s")


class SnapshotConfig(Strict):
    """Annotated JPEGs on ``<prefix>/<device>/<camera>/snapshot`` for chosen verdicts."""

    enabled: bool = False
    verdicts: list[Literal["pass", "defect", "uncertain"]] = Field(default_factory=lambda: ["defect", "uncertain"])  # type: ignore[arg-type]
    max_width: Annotated[int, Field(ge=64, le=8192)] = 640
    quality: Annotated[int, Field(ge=10, le=100)] = 80
    max_bytes: Annotated[int, Field(ge=1024, le=10 * 1024 * 1024)] = 200_000
    store_in_outbox: bool = Field(
        default=False, description="keep snapshots through outages like events (they count against the "
        "outbox bounds); by default a snapshot is sent only while connected")


def check_listen(value: str) -> str:
    """A ``HOST:PORT`` listen address (``[::1]:PORT`` for IPv6, port 0 picks a free one); ValueError if not."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r} is not a listen address; expected HOST:PORT, e.g. 127.0.0.1:9464 "
                         "([::1]:PORT for IPv6, port 0 for a free one)")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            raise ValueError(f"{value!r}: {host} is not an IPv6 address") from None
    return value


class DatasetConfig(Strict):
    """The dataset recorder (:mod:`agent.dataset.recorder`): escalated frames with the VLM's answer, and a
    sample of confident ones, kept as training data. Off unless a camera records (``record``)."""

    record: bool = Field(default=False, description="record every camera (cameras[].record overrides it)")
    dir: pathlib.Path | None = Field(
        default=None, description="where the records go (default: $STATE_DIRECTORY/dataset under systemd, else "
        "$XDG_STATE_HOME/edge-agent/dataset or ~/.local/state/edge-agent/dataset)")
    max_frames: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=5000, description="most frames kept; past it the oldest (by capture time) are deleted")
    max_bytes: Annotated[int, Field(ge=1024 * 1024)] = Field(
        default=2 * 1024 ** 3, description="most bytes kept (JPEGs and records); past it the oldest are deleted")
    confident_sample: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.02, description="share of the confident (not escalated) frames kept too, labelled by the "
        "prefilter alone, to keep the class balance honest; 0 keeps none")
    jpeg_quality: Annotated[int, Field(ge=50, le=100)] = 95
    queue_size: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=16, description="frames waiting for the writer thread; when full a frame is dropped (counted), "
        "inspection never waits")
    max_pending: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=64, description="escalated frames held while their answer is awaited; past it the oldest is "
        "dropped (counted)")


class MetricsConfig(Strict):
    """The local HTTP endpoint with Prometheus ``/metrics`` and ``/healthz``."""

    enabled: bool = True
    listen: str = Field(default="127.0.0.1:9464", description="HOST:PORT ([::1]:PORT for IPv6; port 0 picks a "
                        "free one); keep it on loopback unless a scraper on another host needs it")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return check_listen(v)


class HealthConfig(Strict):
    """How long each stage may go without progress before it counts as stuck: the systemd watchdog
    pings stop and ``/healthz`` answers 503. Keep the windows below the unit's ``WatchdogSec``."""

    inference_window_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=20.0, description="longest one frame's inspection (prefilter, triage, outbox commit) may take")
    capture_window_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=20.0, description="longest a camera may stay inside one open or read call (a stream's own "
        "timeouts are 5 s; a camera waiting to reconnect is not stuck)")
    publish_window_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=20.0, description="longest one pass of the outbox forwarder may take")
    status_interval_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=10.0, description="seconds between the one-line STATUS= updates that `systemctl status` shows")


class LoggingConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "warning"
    json_format: bool = Field(default=False, alias="json")


def _default_cameras() -> list[CameraConfig]:
    return [CameraConfig(id="conveyor1", source="synthetic://conveyor?seed=1&fps=15")]


class AgentConfig(Strict):
    device_id: str = Field(default_factory=lambda: _sanitise_host(socket.gethostname()))
    cameras: list[CameraConfig] = Field(default_factory=_default_cameras, min_length=1)
    model: ModelConfig = Field(default_factory=ModelConfig)
    triage: TriageConfig = Field(default_factory=TriageConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    mode: CameraMode = Field(default="inspect", description=(
        "every camera's mode unless it sets its own; `model: null` means learn (there is no prefilter)"))
    learn: LearnConfig = Field(default_factory=LearnConfig)
    opcua_server: OpcUaServerConfig = Field(default_factory=OpcUaServerConfig)
    sparkplug: SparkplugConfig = Field(default_factory=SparkplugConfig)
    plc: PlcConfig = Field(default_factory=PlcConfig)
    taxonomy: pathlib.Path | None = None
    """The plant's defect taxonomy file (relative to the config file); None: tags keep only their raw labels."""
    _taxonomy: Taxonomy | None = PrivateAttr(default=None)

    @property
    def loaded_taxonomy(self) -> Taxonomy | None:
        """The taxonomy read from ``taxonomy`` by :func:`agent.config.loader.load_config` (None before, or
        without one); copies of the config (``model_copy``) keep it."""
        return self._taxonomy

    def with_taxonomy(self, taxonomy: Taxonomy | None) -> AgentConfig:
        """A copy of this config that carries ``taxonomy`` (read from ``self.taxonomy``)."""
        copy = self.model_copy()
        copy._taxonomy = taxonomy
        return copy

    @field_validator("device_id")
    @classmethod
    def _device(cls, v: str) -> str:
        return _check_id(v, "device id")

    @model_validator(mode="before")
    @classmethod
    def _no_model_means_learn(cls, data: Any) -> Any:
        """``model: null``: there is no prefilter for this line yet, so every camera learns (``mode: learn``)."""
        if isinstance(data, dict) and "model" in data and data["model"] is None:
            if data.get("mode", "learn") != "learn":
                raise ValueError(f"model is null (no prefilter) but mode is {data['mode']!r}: without a model the "
                                 "cameras can only learn; set mode: learn or give model.path")
            cameras = data.get("cameras")
            inspecting = [f"cameras[{i}]" for i, cam in enumerate(cameras if isinstance(cameras, list) else [])
                          if isinstance(cam, dict) and cam.get("mode") == "inspect"]
            if inspecting:
                raise ValueError(f"model is null (no prefilter) but {', '.join(inspecting)} has mode: inspect, which "
                                 "needs a prefilter; give model.path or set that camera's mode to learn")
            data = {k: v for k, v in data.items() if k != "model"}
            data["mode"] = "learn"
        return data

    @model_validator(mode="after")
    def _unique_cameras(self) -> AgentConfig:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"camera id {cam.id!r} appears more than once; ids must be unique")
            seen.add(cam.id)
        return self

    @model_validator(mode="after")
    def _plc_maps(self) -> AgentConfig:
        problems = check_camera_plcs(self.plc, self.cameras, learns=self.learns)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _recording_needs_a_gateway(self) -> AgentConfig:
        recording = [cam.id for cam in self.cameras if self.records(cam)]
        if recording and self.escalation.gateway is None:
            raise ValueError(
                f"dataset recording is on for camera(s) {', '.join(recording)} (dataset.record / cameras[].record) "
                "but escalation.gateway is not set: the recorder keeps the frames the VLM answered; set "
                "escalation.gateway or turn recording off")
        return self

    @model_validator(mode="after")
    def _learning_needs_a_gateway(self) -> AgentConfig:
        learning = [cam.id for cam in self.cameras if self.learns(cam)]
        if learning and self.escalation.gateway is None:
            raise ValueError(
                f"camera(s) {', '.join(learning)} are in learn mode (mode: learn, or model: null), which sends a "
                "sample of their frames to the VLM, but escalation.gateway is not set; set escalation.gateway")
        recording = [cam for cam in learning if self.records(next(c for c in self.cameras if c.id == cam))]
        if recording and self.taxonomy is None:
            raise ValueError(
                f"camera(s) {', '.join(recording)} learn and record: their records are labelled with the plant's "
                "defect classes, which come from the taxonomy file; set taxonomy (see docs/taxonomy.md)")
        return self

    def learns(self, camera: CameraConfig) -> bool:
        """Whether ``camera`` is in learn mode (no prefilter: a sample of its frames goes to the VLM)."""
        return (camera.mode or self.mode) == "learn"

    def learn_for(self, camera: CameraConfig) -> LearnConfig:
        return camera.learn or self.learn

    @property
    def needs_model(self) -> bool:
        """Whether any camera inspects with the prefilter (False: every camera learns, no model is loaded)."""
        return any(not self.learns(cam) for cam in self.cameras)

    def records(self, camera: CameraConfig) -> bool:
        """Whether the dataset recorder keeps this camera's frames."""
        return self.dataset.record if camera.record is None else camera.record

    def triage_for(self, camera: CameraConfig) -> TriageConfig:
        return camera.triage or self.triage

    def escalation_rate_for(self, camera: CameraConfig) -> RateLimitConfig:
        return camera.escalation_rate or self.escalation.rate_per_camera


def _sanitise_host(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", name.split(".")[0])[:64].strip("-_.")
    return cleaned or "edge-device"
