"""Typed configuration. Every model rejects unknown keys and is frozen after load.

The defaults run the demo: one synthetic conveyor camera, the shipped detector,
a broker on localhost. See README "Configuration reference" for every field.
"""

from __future__ import annotations

import pathlib
import re
import socket
import urllib.parse
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

REPO_MODELS = pathlib.Path(__file__).resolve().parent.parent.parent / "models"
DEFAULT_MODEL = REPO_MODELS / "conveyor-yolov8n.onnx"

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


def _check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-64 characters of letters, digits, '_', '.', '-' "
            "(it becomes part of MQTT topics, where '+', '#' and '/' are not allowed)"
        )
    return value


class TriageConfig(_Strict):
    """Confidence band. A detection >= accept is trusted, < reject is dropped,
    anything in between makes the frame uncertain."""

    accept: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6
    reject: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25

    @model_validator(mode="after")
    def _band(self) -> TriageConfig:
        if self.reject > self.accept:
            raise ValueError(f"reject ({self.reject}) must not be above accept ({self.accept})")
        return self


class CameraConfig(_Strict):
    id: str
    source: str = Field(description="synthetic://conveyor[?seed=N&fps=F&frames=N], a video file, "
                        "rtsp:// or http(s):// URL, a V4L2 device (/dev/videoN or its index)")
    fps: Annotated[float, Field(gt=0, le=240)] | None = Field(
        default=None, description="most frames per second to inspect; None = as the source delivers")
    realtime: bool | None = Field(
        default=None,
        description="keep only the newest frame (live cameras) instead of every frame (files); "
        "default: true for cameras and URLs, false for files and synthetic sources")
    triage: TriageConfig | None = None
    reconnect_initial_s: Annotated[float, Field(gt=0)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _check_id(v, "camera id")


class ModelConfig(_Strict):
    path: pathlib.Path = DEFAULT_MODEL
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"], min_length=1)
    intra_op_threads: Annotated[int, Field(ge=0, le=64)] = 2
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    iou_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.7
    max_detections: Annotated[int, Field(ge=1, le=1000)] = 100


class TlsConfig(_Strict):
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


class MqttConfig(_Strict):
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
        parsed = urllib.parse.urlsplit(v)
        if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
            raise ValueError(f"{v!r} is not a broker URL; expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        try:
            _ = parsed.port
        except ValueError as exc:
            raise ValueError(f"{v!r} has an invalid port: {exc}") from None
        return v

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


class OutboxConfig(_Strict):
    """The SQLite store-and-forward queue between inspection and MQTT."""

    path: pathlib.Path | None = Field(
        default=None, description="default: $STATE_DIRECTORY/outbox.sqlite under systemd, else "
        "$XDG_STATE_HOME/edge-agent/outbox.sqlite or ~/.local/state/edge-agent/outbox.sqlite")
    max_rows: Annotated[int, Field(ge=1)] = 100_000
    max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    synchronous: Literal["normal", "full"] = Field(
        default="normal", description="normal survives a crash of the agent; full also a power cut (slower)")
    inflight: Annotated[int, Field(ge=1, le=1000)] = 64


class SnapshotConfig(_Strict):
    """Annotated JPEGs on ``<prefix>/<device>/<camera>/snapshot`` for chosen verdicts."""

    enabled: bool = False
    verdicts: list[Literal["pass", "defect", "uncertain"]] = Field(default_factory=lambda: ["defect", "uncertain"])  # type: ignore[arg-type]
    max_width: Annotated[int, Field(ge=64, le=8192)] = 640
    quality: Annotated[int, Field(ge=10, le=100)] = 80
    max_bytes: Annotated[int, Field(ge=1024, le=10 * 1024 * 1024)] = 200_000
    store_in_outbox: bool = Field(
        default=False, description="keep snapshots through outages like events (they count against the "
        "outbox bounds); by default a snapshot is sent only while connected")


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "warning"
    json_format: bool = Field(default=False, alias="json")


def _default_cameras() -> list[CameraConfig]:
    return [CameraConfig(id="conveyor1", source="synthetic://conveyor?seed=1&fps=15")]


class AgentConfig(_Strict):
    device_id: str = Field(default_factory=lambda: _sanitise_host(socket.gethostname()))
    cameras: list[CameraConfig] = Field(default_factory=_default_cameras, min_length=1)
    model: ModelConfig = Field(default_factory=ModelConfig)
    triage: TriageConfig = Field(default_factory=TriageConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("device_id")
    @classmethod
    def _device(cls, v: str) -> str:
        return _check_id(v, "device id")

    @model_validator(mode="after")
    def _unique_cameras(self) -> AgentConfig:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"camera id {cam.id!r} appears more than once; ids must be unique")
            seen.add(cam.id)
        return self

    def triage_for(self, camera: CameraConfig) -> TriageConfig:
        return camera.triage or self.triage


def _sanitise_host(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", name.split(".")[0])[:64].strip("-_.")
    return cleaned or "edge-device"
