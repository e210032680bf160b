"""YAML documents validated by a pydantic model, with the line of every problem.

:func:`read_file` parses a file with :class:`LineLoader`, which records the 1-based line of every key and
list item and rejects duplicate keys; :func:`describe` turns a pydantic error into ``FIELD (WHERE): MESSAGE``,
where WHERE is the line in the file or the environment variable that set the value (:func:`where`), and
FIELD the dotted path (:func:`dotted`). The agent's config (:mod:`agent.config.loader`), the gateway's and
the taxonomy file (:mod:`agent.config.taxonomy`) are read through these.
"""

from __future__ import annotations

import pathlib
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

import yaml
from pydantic import BaseModel

from agent.errors import ConfigError

__all__ = ["FieldPath", "Key", "LineLoader", "describe", "dotted", "field_names", "kind", "make_absolute",
           "model_at", "read_file", "where"]

Key = str | int
FieldPath = tuple[Key, ...]

# Error types whose message already shows the value, or where the input is not the user's value.
_NO_GOT = {"missing", "extra_forbidden", "value_error", "assertion_error", "invalid_key"}


class LineLoader(yaml.SafeLoader):
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
                        f"{dotted((*path, key))} (line {line}): duplicate key, first at line {first[key]}")
                first.setdefault(key, line)  # the data keeps the last value, so the lines follow it
                self.lines[(*path, key)] = line
                self._record(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                self._record(item, (*path, index))


def read_file(path: pathlib.Path, root: type[BaseModel],
               file_fields: tuple[tuple[str, ...], ...]) -> tuple[dict[str, Any], dict[FieldPath, int], list[str]]:
    """Parse the file: (data with model.path made absolute, line per field path, problems)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such config file"], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc}"], str(path)) from exc

    loader = LineLoader(text)
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
        allowed = ", ".join(field_names(root))
        raise ConfigError([f"top level (line {loader.lines.get((), 1)}): expected a mapping of settings "
                           f"({allowed}), got {kind(document)}"], str(path))

    for keys in file_fields:
        make_absolute(document, keys, path.resolve().parent)
    return document, loader.lines, loader.duplicates


def make_absolute(document: dict[str, Any], keys: tuple[str, ...], base: pathlib.Path) -> None:
    node: Any = document
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
        value = pathlib.Path(node[keys[-1]]).expanduser()
        if not value.is_absolute():
            node[keys[-1]] = str(base / value)


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """``line L, column C: PROBLEM (CONTEXT at line N)`` from PyYAML's marks (0-based there)."""
    mark = exc.problem_mark or exc.context_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    text += exc.problem or exc.context or "not valid YAML"
    if exc.problem and exc.context:
        context_mark = exc.context_mark
        text += f" ({exc.context}" + (f" at line {context_mark.line + 1})" if context_mark else ")")
    return text


def describe(
    error: Mapping[str, Any], lines: Mapping[FieldPath, int], overrides: Mapping[FieldPath, str],
    root: type[BaseModel],
) -> str:
    """One problem line for a pydantic error: ``FIELD (WHERE): MESSAGE``."""
    loc: FieldPath = tuple(error["loc"])
    error_type, message, value = error["type"], str(error["msg"]), error["input"]
    if error_type == "extra_forbidden":
        parent = model_at(loc[:-1], root)
        allowed = ", ".join(field_names(parent)) if parent else "(none)"
        message = f"unknown key; expected one of: {allowed}"
    elif error_type == "value_error":
        message = message.removeprefix("Value error, ")
    if error_type not in _NO_GOT and not isinstance(value, (dict, list)):
        message += f" (got {value!r})"
    place = where(loc, lines, overrides)
    return f"{dotted(loc)}{f' ({place})' if place else ''}: {message}"


def where(loc: FieldPath, lines: Mapping[FieldPath, int], overrides: Mapping[FieldPath, str]) -> str:
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


def model_at(path: FieldPath, root: type[BaseModel]) -> type[BaseModel] | None:
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


def field_names(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def dotted(path: FieldPath) -> str:
    """``("cameras", 1, "source")`` -> ``cameras[1].source``; ``()`` -> ``top level``."""
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text or "top level"


def kind(value: Any) -> str:
    if value is None:
        return "empty (null)"
    return {list: "a list", dict: "a mapping", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}")
