"""The rollout manifest: which boxes, which model (its source and sha256), the canary, the gate and the
watch, and the broker all boxes hold a session with. Read once, every problem with its field and line.

    broker: {url: mqtt://plant-broker:1883, topic_prefix: edge}
    secret_file: /etc/edge-agent/fleet.key     # the HMAC key every box's `fleet serve` holds too
    model:
      source: /srv/models/line3-v7.onnx        # a path or http(s) URL the boxes read (plant-local)
      sha256: 3f5a...                          # 64 hex: a box refuses a file with another digest
    boxes: [line3-a, line3-b, line3-c, line3-d]
    canary: line3-a                            # default: the first box
    gate: {margin: 0.01}
    watch: {window_s: 600, max_rise: 0.02}     # the canary's escalation rate, before vs after
    timeouts: {reach_s: 10, canary_s: 1800, box_s: 900}
"""

from __future__ import annotations

import pathlib
import re
import urllib.parse
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator

from agent.config.base import Strict
from agent.config.urls import check_broker_url
from agent.config.yamlfile import describe, read_file
from agent.errors import ConfigError

__all__ = ["BrokerSection", "GateSection", "Manifest", "ModelSection", "Timeouts", "WatchSection", "load_manifest"]

_DEVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a topic segment: no '/', '+', '#'


class BrokerSection(Strict):
    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = "edge"
    username: str | None = None
    password_file: pathlib.Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_broker_url(v)

    @model_validator(mode="after")
    def _login(self) -> BrokerSection:
        if self.password_file is not None and not self.username:
            raise ValueError("a password_file needs a username")
        return self


class ModelSection(Strict):
    source: str = Field(description="a path or http(s):// URL on the plant network that every box can read")
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError(f"expected the model file's sha256, 64 hex digits (`sha256sum FILE`; quote it), got {v!r}")
        return v.lower()

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        scheme = urllib.parse.urlsplit(v).scheme
        if scheme not in ("", "file", "http", "https"):
            raise ValueError(f"{v!r}: expected a file path or an http(s):// URL the boxes can read")
        return v


class GateSection(Strict):
    margin: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.01
    metric: str | None = None
    split: str = "val"


class WatchSection(Strict):
    window_s: Annotated[float, Field(ge=0, le=86400)] = 600.0
    max_rise: Annotated[float, Field(ge=0, le=1)] = 0.02


class Timeouts(Strict):
    reach_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    canary_s: Annotated[float, Field(gt=0)] = 3600.0
    box_s: Annotated[float, Field(gt=0)] = 1800.0


class Manifest(Strict):
    broker: BrokerSection = BrokerSection()
    secret_file: pathlib.Path
    model: ModelSection
    boxes: Annotated[list[str], Field(min_length=1)]
    canary: str | None = None
    gate: GateSection = GateSection()
    watch: WatchSection = WatchSection()
    timeouts: Timeouts = Timeouts()

    @field_validator("boxes")
    @classmethod
    def _boxes(cls, v: list[str]) -> list[str]:
        bad = [b for b in v if not _DEVICE.match(b)]
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))}: expected device ids (letters, digits, '_', '.', '-'), "
                             "as in each box's device_id")
        twice = sorted({b for b in v if v.count(b) > 1})
        if twice:
            raise ValueError(f"named twice: {', '.join(twice)}")
        return v

    @model_validator(mode="after")
    def _canary(self) -> Manifest:
        if self.canary is not None and self.canary not in self.boxes:
            raise ValueError(f"canary {self.canary!r} is not one of boxes ({', '.join(self.boxes)})")
        return self

    @property
    def canary_box(self) -> str:
        return self.canary if self.canary is not None else self.boxes[0]

    @property
    def rest(self) -> list[str]:
        return [b for b in self.boxes if b != self.canary_box]


def load_manifest(path: pathlib.Path) -> Manifest:
    """The manifest in ``path``; ConfigError listing every problem (field and line). Relative paths
    (secret_file, broker.password_file, a model source path) are taken from the manifest's folder."""
    if not path.is_file():
        raise ConfigError([f"{path}: no such manifest file" if not path.exists() else f"{path}: not a file"],
                          str(path))
    data, lines, problems = read_file(path, Manifest, (("secret_file",), ("broker", "password_file")))
    _absolute_source(data, path.resolve().parent)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        problems += [describe(error, lines, {}, Manifest) for error in exc.errors(include_url=False)]
        raise ConfigError(problems, str(path)) from exc
    if problems:
        raise ConfigError(problems, str(path))
    return manifest


def _absolute_source(data: dict[str, Any], base: pathlib.Path) -> None:
    model = data.get("model")
    if not isinstance(model, dict):
        return
    source = model.get("source")
    if isinstance(source, str) and source and urllib.parse.urlsplit(source).scheme in ("", "file"):
        path = pathlib.Path(source.removeprefix("file://"))
        model["source"] = str(path if path.is_absolute() else base / path)
