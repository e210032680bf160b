"""The one exception tree of edge-agent.

    EdgeAgentError                  base; the CLI turns it into a message and exit code 2
    ├── ConfigError                 the config file or an override is wrong (lists every problem)
    ├── ModelError                  a model file is missing, unreadable or not the expected kind
    │   └── ModelLayoutError        the ONNX graph's inputs/outputs are not a layout we run
    ├── SourceError                 a camera/frame source cannot be opened or read
    ├── PublishError                the MQTT side cannot be set up (bad broker URL, broker refused)
    │   └── OutboxError             the SQLite outbox cannot be opened or written
    ├── BrokerError                 a local Mosquitto for the demo/tests could not be started
    └── DatasetError                a dataset cannot be written or read

Third-party errors are translated at the boundary and chained (``raise ... from exc``).
Every message says what was wrong and what was expected.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base class of every error edge-agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """The configuration is invalid. ``problems`` lists one line per problem."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


class ModelError(EdgeAgentError):
    """A model file is missing, unreadable or not what was expected."""


class ModelLayoutError(ModelError):
    """The model's inputs or outputs do not have a layout the prefilter runs."""


class SourceError(EdgeAgentError):
    """A frame source could not be opened or read."""


class PublishError(EdgeAgentError):
    """The MQTT publisher could not be set up or the broker refused it."""


class BrokerError(EdgeAgentError):
    """A local Mosquitto broker could not be started."""


class DatasetError(EdgeAgentError):
    """A dataset could not be written or read."""


class OutboxError(PublishError):
    """The SQLite outbox cannot be opened or written (path, permissions, disk)."""
