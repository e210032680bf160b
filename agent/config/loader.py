"""Load the agent's YAML config file into a frozen :class:`AgentConfig`.

``load_config(path)`` reads the file, applies environment overrides, validates
everything with the pydantic models and raises one :class:`ConfigError` that
lists *every* problem, each as ``FIELD (WHERE): MESSAGE``, where WHERE is the
1-based line in the file (``line 12``) or the variable that set the value
(``environment EDGE_AGENT_MQTT__URL``). ``path=None`` means no file: defaults.

Environment overrides
---------------------
A variable ``EDGE_AGENT_<KEY>[__<KEY>...]`` sets one value; ``__`` separates
nesting levels, keys are lower-cased and numbers index lists::

    EDGE_AGENT_DEVICE_ID=box7
    EDGE_AGENT_MQTT__URL=mqtt://broker:1883
    EDGE_AGENT_CAMERAS__0__SOURCE=rtsp://10.0.0.5/stream
    EDGE_AGENT_MODEL__PROVIDERS='[CUDAExecutionProvider, CPUExecutionProvider]'

Values are parsed as YAML (numbers, booleans, ``null`` and flow lists/mappings
work; quote a value to keep it a string, e.g. ``'"007"'``; an empty value is the
empty string). Overrides win over
the file. A list index must name an item that already exists (in the file, or
in the default list when the file has none); overrides cannot append items.
Relative ``model.path`` (and ``taxonomy``) values from an override are relative to the
working directory; relative values in the file are relative to the file's directory.

``taxonomy: PATH`` names the plant's defect taxonomy; it is read and validated here too (see
:mod:`agent.taxonomy`), and its problems are reported as ``taxonomy (FILE): FIELD (line N): MESSAGE``.

Not an override: ``EDGE_AGENT_CONFIG`` names the config file for ``edge-agent run``
and is ignored here. ``EDGE_AGENT_LOGGING__LEVEL=debug`` is an ordinary override.

The environment is read only inside :func:`load_config` (or from the ``env``
mapping a caller passes), never at import time.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import pathlib
from collections.abc import Mapping
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agent.config.models import AgentConfig, ModelConfig
from agent.config.taxonomy import load_taxonomy
from agent.config.yamlfile import FieldPath, Key, describe, dotted, kind, read_file
from agent.errors import ConfigError

__all__ = ["ENV_PREFIX", "ConfigReport", "check_config", "config_report", "load_config", "load_model"]

ENV_PREFIX = "EDGE_AGENT_"
_ENV_EXAMPLE = {ENV_PREFIX: "MQTT__URL"}  # the example in the "empty key" message, per prefix

M = TypeVar("M", bound=BaseModel)

def load_config(path: pathlib.Path | str | None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Build the agent's config from ``path`` (None: defaults only) and ``env`` (default ``os.environ``).

    Raises ConfigError listing every problem found in the file and the overrides.
    """
    config = load_model(AgentConfig, path, env)
    unknown = config.images.unknown_cameras({c.id for c in config.cameras})  # models.py has no room for it
    if unknown:
        raise ConfigError(unknown, "defaults" if path is None else str(path))
    config = resolve_runtime_paths(config, os.environ if env is None else env)
    if config.taxonomy is None:
        return config
    try:
        taxonomy = load_taxonomy(config.taxonomy)
    except ConfigError as exc:
        raise ConfigError([f"taxonomy ({exc.source}): {problem}" for problem in exc.problems],
                          "defaults" if path is None else str(path)) from exc
    return config.with_taxonomy(taxonomy)


def load_model(
    root: type[M],
    path: pathlib.Path | str | None,
    env: Mapping[str, str] | None = None,
    *,
    env_prefix: str = ENV_PREFIX,
    file_fields: tuple[tuple[str, ...], ...] | None = None,
) -> M:
    """Validate the config model ``root`` from ``path`` (None: defaults only) and the ``<env_prefix>*``
    variables of ``env`` (default ``os.environ``; ``<env_prefix>CONFIG`` is not an override), the way
    :func:`load_config` does for the agent. ``file_fields`` are the paths that are made relative to the
    file's folder (default: the agent's). Raises ConfigError listing every problem.
    """
    source = "defaults" if path is None else str(path)
    data: dict[str, Any] = {}
    lines: dict[FieldPath, int] = {}
    problems: list[str] = []
    if path is not None:
        data, lines, problems = read_file(pathlib.Path(path), root, _FILE_FIELDS if file_fields is None
                                           else file_fields)

    overrides, env_problems = _apply_env(data, os.environ if env is None else env, env_prefix, root)
    problems += env_problems
    try:
        config = root.model_validate(data)
    except ValidationError as exc:
        problems += [describe(error, lines, overrides, root) for error in exc.errors(include_url=False)]
    if problems:
        raise ConfigError(problems, source)
    return config


def check_config(path: pathlib.Path | str | None, env: Mapping[str, str] | None = None) -> list[str]:
    """The problem lines of ``load_config(path, env)``, and those found after it in the same pass (see
    :func:`config_report`); ``[]`` when the config is valid."""
    return config_report(path, env).problems


@dataclasses.dataclass(frozen=True)
class ConfigReport:
    """Every problem of a config file found in one pass, and what of it could be read."""

    problems: list[str]
    config: AgentConfig | None
    """the config, when it loads"""
    model: ModelConfig | None
    """its model section, also when another section has a problem (None when this one has)"""


def config_report(path: pathlib.Path | str | None, env: Mapping[str, str] | None = None) -> ConfigReport:
    """``load_config(path, env)`` with every problem in one list: when the fields have problems, the
    systemd credential (checked only after them by :func:`resolve_runtime_paths`) is checked too, and
    the model section is read on its own so that its file can still be checked."""
    env = os.environ if env is None else env
    try:
        config = load_config(path, env)
    except ConfigError as exc:
        problems = list(exc.problems)
    else:
        return ConfigReport([], config, config.model)
    data: dict[str, Any] = {}
    if path is not None:
        # an unreadable file or bad YAML: that is the one problem, already in the list
        with contextlib.suppress(ConfigError):
            data = read_file(pathlib.Path(path), AgentConfig, _FILE_FIELDS)[0]
    mqtt = data.get("mqtt")
    name = mqtt.get("password_credential") if isinstance(mqtt, dict) else None
    credential = _credential_problem(name, env) if isinstance(name, str) else None
    if credential is not None and credential not in problems:
        problems.append(credential)
    try:
        model: ModelConfig | None = ModelConfig.model_validate(data.get("model") or {})
    except ValidationError:
        model = None  # its problems are in the list
    return ConfigReport(problems, None, model)


# file paths in the config that are relative to the config file's folder
_FILE_FIELDS = (("model", "path"), ("model", "engine_cache_dir"), ("taxonomy",), ("outbox", "path"),
                ("mqtt", "password_file"), ("mqtt", "tls", "ca_file"),
                ("mqtt", "tls", "cert_file"), ("mqtt", "tls", "key_file"), ("escalation", "tls", "ca_file"),
                ("escalation", "tls", "cert_file"), ("escalation", "tls", "key_file"), ("escalation", "token_file"),
                ("dataset", "dir"), ("opcua_server", "security", "cert_file"),
                ("opcua_server", "security", "key_file"), ("opcua_server", "users_file"), ("sparkplug", "store_path"),
                ("images", "dir"))


def default_state_dir(env: Mapping[str, str]) -> pathlib.Path:
    """Where the agent keeps its state: systemd's ``$STATE_DIRECTORY`` (the first, if several),
    else ``$XDG_STATE_HOME/edge-agent``, else ``~/.local/state/edge-agent``."""
    if env.get("STATE_DIRECTORY"):
        return pathlib.Path(env["STATE_DIRECTORY"].split(":")[0])
    if env.get("XDG_STATE_HOME"):
        return pathlib.Path(env["XDG_STATE_HOME"]) / "edge-agent"
    return pathlib.Path(env.get("HOME", str(pathlib.Path.home()))) / ".local" / "state" / "edge-agent"


def resolve_runtime_paths(config: AgentConfig, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Fill in what depends on the service's environment: the outbox's default path and the
    file behind a systemd credential (``$CREDENTIALS_DIRECTORY/<name>``)."""
    env = os.environ if env is None else env
    outbox, mqtt = config.outbox, config.mqtt
    if outbox.path is None:
        outbox = outbox.model_copy(update={"path": default_state_dir(env) / "outbox.sqlite"})
    if mqtt.password_credential is not None:
        problem = _credential_problem(mqtt.password_credential, env)
        if problem is not None:
            raise ConfigError([problem])
        mqtt = mqtt.model_copy(update={"password_file": pathlib.Path(env["CREDENTIALS_DIRECTORY"])
                                       / mqtt.password_credential, "password_credential": None})
    return config.model_copy(update={"outbox": outbox, "mqtt": mqtt})


def _credential_problem(name: str, env: Mapping[str, str]) -> str | None:
    """Why ``mqtt.password_credential: NAME`` cannot be used in ``env``, or None."""
    if env.get("CREDENTIALS_DIRECTORY"):
        return None
    return (f"mqtt.password_credential: {name!r} names a systemd credential but $CREDENTIALS_DIRECTORY is not "
            f"set; add LoadCredential={name}:/path/to/secret to the unit, or use password_file")


def _apply_env(data: dict[str, Any], env: Mapping[str, str], prefix: str,
               root: type[BaseModel]) -> tuple[dict[FieldPath, str], list[str]]:
    """Apply ``<prefix>*`` overrides to ``data`` in place: (variable per path set, problems)."""
    applied: dict[FieldPath, str] = {}
    problems: list[str] = []
    for name in sorted(env):
        if not name.startswith(prefix) or name == f"{prefix}CONFIG":
            continue
        keys = name[len(prefix):].lower().split("__")
        if not all(keys):
            problems.append(f"environment {name}: empty key; expected {prefix}KEY[__KEY...], "
                            f"e.g. {prefix}{_ENV_EXAMPLE.get(prefix, 'LOGGING__LEVEL')}")
            continue
        try:
            value = yaml.safe_load(env[name]) if env[name].strip() else ""
        except yaml.YAMLError as exc:
            problems.append(f"{dotted(tuple(keys))} (environment {name}): value is not valid YAML: "
                            f"{getattr(exc, 'problem', None) or exc}")
            continue
        path, problem = _set(data, keys, value, root)
        if problem:
            problems.append(f"{dotted(path)} (environment {name}): {problem}")
        else:
            applied[path] = name
    return applied, problems


def _set(data: dict[str, Any], keys: list[str], value: Any, root: type[BaseModel]) -> tuple[FieldPath, str | None]:
    """Set ``value`` at ``keys`` inside ``data``: (the path as set, a problem or None)."""
    node: Any = data
    path: FieldPath = ()
    for depth, raw in enumerate(keys):
        key: Key = raw
        if isinstance(node, list):
            if not raw.isdigit():
                return (*path, raw), f"{dotted(path)} is a list; expected a number as the index"
            key = int(raw)
            if key >= len(node):
                return (*path, key), (f"index {key} is past the end of the list ({len(node)} item(s)); "
                                      "add the item to the config file first")
        elif not isinstance(node, dict):
            return (*path, raw), f"{dotted(path)} is {kind(node)}, not a mapping or a list"
        path = (*path, key)
        if depth == len(keys) - 1:
            node[key] = value
        else:
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = _default_list(path, root) if keys[depth + 1].isdigit() else {}
            node = node[key]
    return path, None


def _default_list(path: FieldPath, root: type[BaseModel]) -> Any:
    """The default value at ``path`` (as plain data) when it is a list, else an empty list."""
    value: Any = root().model_dump(mode="json", by_alias=True)
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return []
        value = value[key]
    return copy.deepcopy(value) if isinstance(value, list) else []


