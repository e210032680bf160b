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
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

import yaml
from pydantic import BaseModel, ValidationError

from agent.config.models import AgentConfig, ModelConfig
from agent.errors import ConfigError

__all__ = ["ENV_PREFIX", "ConfigReport", "check_config", "config_report", "load_config", "load_model"]

ENV_PREFIX = "EDGE_AGENT_"
_ENV_EXAMPLE = {ENV_PREFIX: "MQTT__URL"}  # the example in the "empty key" message, per prefix

Key = str | int
FieldPath = tuple[Key, ...]
M = TypeVar("M", bound=BaseModel)

# Error types whose message already shows the value, or where the input is not the user's value.
_NO_GOT = {"missing", "extra_forbidden", "value_error", "assertion_error", "invalid_key"}


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every key and list item, and rejects duplicate keys.

    ``lines`` maps a field path (``("cameras", 1, "source")``) to its 1-based line;
    the data handed to pydantic stays plain dicts, lists and scalars.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[FieldPath, int] = {}
        self.duplicates: list[str] = []

    def construct_document(self, node: yaml.Node) -> Any:
        self._record(node, ())
        return super().construct_document(node)

    def _record(self, node: yaml.Node, path: FieldPath) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                    continue  # complex keys are left to pydantic; merge keys carry no own line
                key, line = str(key_node.value), key_node.start_mark.line + 1
                if key in first:
                    self.duplicates.append(
                        f"{_dotted((*path, key))} (line {line}): duplicate key, first at line {first[key]}")
                first.setdefault(key, line)  # the data keeps the last value, so the lines follow it
                self.lines[(*path, key)] = line
                self._record(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                self._record(item, (*path, index))


def load_config(path: pathlib.Path | str | None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Build the agent's config from ``path`` (None: defaults only) and ``env`` (default ``os.environ``).

    Raises ConfigError listing every problem found in the file and the overrides.
    """
    config = load_model(AgentConfig, path, env)
    config = resolve_runtime_paths(config, os.environ if env is None else env)
    if config.taxonomy is None:
        return config
    from agent.taxonomy.loading import load_taxonomy  # it uses this module's reader

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
        data, lines, problems = _read_file(pathlib.Path(path), root, _FILE_FIELDS if file_fields is None
                                           else file_fields)

    overrides, env_problems = _apply_env(data, os.environ if env is None else env, env_prefix, root)
    problems += env_problems
    try:
        config = root.model_validate(data)
    except ValidationError as exc:
        problems += [_describe(error, lines, overrides, root) for error in exc.errors(include_url=False)]
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
            data = _read_file(pathlib.Path(path), AgentConfig, _FILE_FIELDS)[0]
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


def _read_file(path: pathlib.Path, root: type[BaseModel],
               file_fields: tuple[tuple[str, ...], ...]) -> tuple[dict[str, Any], dict[FieldPath, int], list[str]]:
    """Parse the file: (data with model.path made absolute, line per field path, problems)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such config file"], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc}"], str(path)) from exc

    loader = _LineLoader(text)
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_problem(exc)], str(path)) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(path)) from exc
    finally:
        loader.dispose()

    if document is None:  # empty file, or only comments
        return {}, {}, loader.duplicates
    if not isinstance(document, dict):
        allowed = ", ".join(_field_names(root))
        raise ConfigError([f"top level (line {loader.lines.get((), 1)}): expected a mapping of settings "
                           f"({allowed}), got {_kind(document)}"], str(path))

    for keys in file_fields:
        _make_absolute(document, keys, path.resolve().parent)
    return document, loader.lines, loader.duplicates


# file paths in the config that are relative to the config file's folder
_FILE_FIELDS = (("model", "path"), ("model", "engine_cache_dir"), ("taxonomy",), ("outbox", "path"),
                ("mqtt", "password_file"), ("mqtt", "tls", "ca_file"),
                ("mqtt", "tls", "cert_file"), ("mqtt", "tls", "key_file"), ("escalation", "tls", "ca_file"),
                ("escalation", "tls", "cert_file"), ("escalation", "tls", "key_file"), ("escalation", "token_file"),
                ("dataset", "dir"))


def _make_absolute(document: dict[str, Any], keys: tuple[str, ...], base: pathlib.Path) -> None:
    node: Any = document
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
        value = pathlib.Path(node[keys[-1]]).expanduser()
        if not value.is_absolute():
            node[keys[-1]] = str(base / value)


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


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """``line L, column C: PROBLEM (CONTEXT at line N)`` from PyYAML's marks (0-based there)."""
    mark = exc.problem_mark or exc.context_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    text += exc.problem or exc.context or "not valid YAML"
    if exc.problem and exc.context:
        context_mark = exc.context_mark
        text += f" ({exc.context}" + (f" at line {context_mark.line + 1})" if context_mark else ")")
    return text


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
            problems.append(f"{_dotted(tuple(keys))} (environment {name}): value is not valid YAML: "
                            f"{getattr(exc, 'problem', None) or exc}")
            continue
        path, problem = _set(data, keys, value, root)
        if problem:
            problems.append(f"{_dotted(path)} (environment {name}): {problem}")
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
                return (*path, raw), f"{_dotted(path)} is a list; expected a number as the index"
            key = int(raw)
            if key >= len(node):
                return (*path, key), (f"index {key} is past the end of the list ({len(node)} item(s)); "
                                      "add the item to the config file first")
        elif not isinstance(node, dict):
            return (*path, raw), f"{_dotted(path)} is {_kind(node)}, not a mapping or a list"
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


def _describe(
    error: Mapping[str, Any], lines: Mapping[FieldPath, int], overrides: Mapping[FieldPath, str],
    root: type[BaseModel],
) -> str:
    """One problem line for a pydantic error: ``FIELD (WHERE): MESSAGE``."""
    loc: FieldPath = tuple(error["loc"])
    kind, message, value = error["type"], str(error["msg"]), error["input"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1], root)
        allowed = ", ".join(_field_names(parent)) if parent else "(none)"
        message = f"unknown key; expected one of: {allowed}"
    elif kind == "value_error":
        message = message.removeprefix("Value error, ")
    if kind not in _NO_GOT and not isinstance(value, (dict, list)):
        message += f" (got {value!r})"
    where = _where(loc, lines, overrides)
    return f"{_dotted(loc)}{f' ({where})' if where else ''}: {message}"


def _where(loc: FieldPath, lines: Mapping[FieldPath, int], overrides: Mapping[FieldPath, str]) -> str:
    """``environment VAR`` if an override set this value, else its line (and overrides inside it)."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in overrides:
            return f"environment {overrides[loc[:end]]}"
    parts: list[str] = []
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            parts.append(f"line {lines[loc[:end]]}")
            break
    inside = [name for path, name in overrides.items() if path[:len(loc)] == loc]
    if inside:
        parts.append(f"environment {', '.join(inside)}")
    return ", ".join(parts)


def _model_at(path: FieldPath, root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``path`` (list indices skipped)."""
    model: type[BaseModel] = root
    for key in path:
        if isinstance(key, int):
            continue
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        if key not in fields:
            return None
        found = _inner_model(fields[key].annotation)
        if found is None:
            return None
        model = found
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model class in ``X``, ``X | None`` or ``list[X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _dotted(path: FieldPath) -> str:
    """``("cameras", 1, "source")`` -> ``cameras[1].source``; ``()`` -> ``top level``."""
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text or "top level"


def _kind(value: Any) -> str:
    if value is None:
        return "empty (null)"
    return {list: "a list", dict: "a mapping", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}")
