"""The MQTT payloads' JSON Schemas, and validators that explain what is wrong.

The schemas live in the repository's wire contracts, ``proto/mqtt/``: the tag event
(``tag-event.v1.schema.json``), the retained device status (``status.v1.schema.json``) and the
periodic stats (``stats.v1.schema.json``, :func:`validate_stats`);
this module finds them next to the package (``agent/../proto``).
:func:`validate_payload` (tag events) and :func:`validate_status` check a decoded payload
and return one human-readable line per problem, each starting with the JSON
path of the offending value (``$.tags[0].confidence: ...``). An empty list
means the payload is valid.

``format: date-time`` is checked here (strict RFC 3339), not left to optional
jsonschema extras: the default ``FormatChecker`` silently skips it when the
``rfc3339-validator`` package is not installed.
"""

from __future__ import annotations

import datetime
import functools
import json
import pathlib
import re
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from agent.errors import PublishError

SCHEMA_DIR = pathlib.Path(__file__).resolve().parents[2] / "proto" / "mqtt"
SCHEMA_PATH = SCHEMA_DIR / "tag-event.v1.schema.json"
STATUS_SCHEMA_PATH = SCHEMA_DIR / "status.v1.schema.json"
STATS_SCHEMA_PATH = SCHEMA_DIR / "stats.v1.schema.json"

_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2})(\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$")


@functools.cache
def _load(path: pathlib.Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PublishError(
            f"{what} schema not found at {path} ({exc.strerror}); it ships in the source "
            "tree under proto/mqtt/, run from a checkout or an editable install"
        ) from exc
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_schema() -> dict[str, Any]:
    """The tag event schema as a dict (read once, then cached)."""
    return _load(SCHEMA_PATH, "tag event")


def load_status_schema() -> dict[str, Any]:
    """The device status schema as a dict (read once, then cached)."""
    return _load(STATUS_SCHEMA_PATH, "device status")


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True  # format only applies to strings; "type" reports the rest
    match = _RFC3339.match(value)
    if match is None:
        return False
    try:  # catches month 13, Feb 30, hour 25 (the regex only checks the shape)
        datetime.datetime.strptime(match.group(1).upper(), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return False
    offset_h, offset_m = match.group(3), match.group(4)
    return offset_h is None or (int(offset_h) <= 23 and int(offset_m) <= 59)


def load_stats_schema() -> dict[str, Any]:
    """The periodic stats schema as a dict (read once, then cached)."""
    return _load(STATS_SCHEMA_PATH, "periodic stats")


@functools.cache
def _validator(status: bool = False, stats: bool = False) -> Draft202012Validator:
    checker = FormatChecker()  # a per-instance copy of the default checkers
    checker.checks("date-time")(_is_rfc3339)
    schema = load_stats_schema() if stats else load_status_schema() if status else load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=checker)


def _problems(validator: Draft202012Validator, obj: object) -> list[str]:
    errors = sorted(validator.iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [f"{e.json_path}: {e.message}" for e in errors]


def validate_payload(obj: object) -> list[str]:
    """Problems with a decoded tag event payload, one line each ("PATH: message").

    Empty when the payload matches ``proto/mqtt/tag-event.v1.schema.json``.
    """
    return _problems(_validator(), obj)


def validate_status(obj: object) -> list[str]:
    """Problems with a decoded device status payload (``<prefix>/<device>/status``), one line each.

    Empty when the payload matches ``proto/mqtt/status.v1.schema.json``.
    """
    return _problems(_validator(status=True), obj)


def validate_stats(obj: object) -> list[str]:
    """Problems with a decoded periodic stats payload (``<prefix>/<device>/stats``), one line each.

    Empty when the payload matches ``proto/mqtt/stats.v1.schema.json``.
    """
    return _problems(_validator(stats=True), obj)
