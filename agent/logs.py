"""Structured logging for a service that journald keeps.

Quiet by default (warnings and errors). Two formats: ``key=value`` text, one line
per record (readable in ``journalctl``), or JSON lines for log shippers. Extra
fields passed with ``log.info("...", extra={"camera": "cam1"})`` are included. Every line
passes :func:`agent.redact.redact`, so a credential in a URL or error text is never logged.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, TextIO

from agent.redact import redact

_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update({k: v if isinstance(v, str | int | float | bool | None) else repr(v)
                    for k, v in _extras(record).items()})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(doc))  # credentials never reach a log line, whoever wrote it


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [f"level={record.levelname.lower()}", f"logger={record.name}", f"msg={record.getMessage()!r}"]
        parts += [f"{k}={v!r}" for k, v in _extras(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)  # credentials never reach a log line, whoever wrote it


LEVELS = ("debug", "info", "warning", "error")
"""the levels ``logging.level`` and ``--log-level`` take"""


def configure(level: str = "warning", json_format: bool = False, stream: TextIO | None = None) -> None:
    """Configure the ``agent`` logger tree once (replacing earlier handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else KeyValueFormatter())
    root = logging.getLogger("agent")
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
