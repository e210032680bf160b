"""The one exception tree of edge-agent.

    EdgeAgentError                  base; the CLI turns it into a message and exit code 2
    ├── ConfigError                 the config file or an override is wrong (lists every problem)
    ├── ModelError                  a model file is missing, unreadable or not the expected kind
    │   └── ModelLayoutError        the ONNX graph's inputs/outputs are not a layout we run
    ├── SourceError                 a camera/frame source cannot be opened or read
    ├── PublishError                the MQTT side cannot be set up (bad broker URL, broker refused)
    │   └── OutboxError             the SQLite outbox cannot be opened or written
    ├── BrokerError                 a local Mosquitto for the demo/tests could not be started
    ├── DatasetError                a dataset cannot be written or read
    ├── ImagesError                 the audit images' folder cannot be opened; a bad `images` filter or target
    ├── BatchError                  `edge-agent tag`: a PATH is missing, the output is of another format
    ├── MetricsError                the /metrics + /healthz endpoint cannot listen on its address
    ├── OpcUaServerError            the agent's OPC UA server cannot start (port in use, certificate, users file)
    └── GatewayError                the escalation gateway cannot start (listen address, TLS files);
        │                           its subclasses are one Describe call's failures:
        ├── RequestRejected         a Describe request is bad: image, crop or template (INVALID_ARGUMENT)
        └── VlmError                Ollama gave no usable answer; ``grpc_code`` names the gRPC status
            ├── VlmUnavailable      Ollama unreachable, or busy (503)                     UNAVAILABLE
            │   └── VlmLoading      the model is still loading in Ollama ("loading: ...") UNAVAILABLE
            ├── VlmModelMissing     the model is not pulled, or cannot take images        FAILED_PRECONDITION
            │   └── VlmModelFailed  the model cannot serve: out of memory, its runner     FAILED_PRECONDITION
            │                       keeps dying, or the question cannot fit its context
            ├── VlmTimeout          no answer within the deadline or the request timeout  DEADLINE_EXCEEDED
            └── VlmInvalidAnswer    the answer does not match the schema, also on retry   ABORTED

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


class ImagesError(EdgeAgentError):
    """The audit images' folder cannot be opened or read, or an ``edge-agent images`` filter or target is bad."""


class DatasetError(EdgeAgentError):
    """A dataset could not be written or read."""


class BatchError(EdgeAgentError):
    """Batch tagging (``edge-agent tag``) cannot start: a PATH does not exist, or the output file exists in
    another format or is not a tag output."""


class MetricsError(EdgeAgentError):
    """The metrics endpoint (``metrics.listen``) cannot listen: the address is in use or not on this host."""


class OpcUaServerError(EdgeAgentError):
    """The agent's OPC UA server cannot start: its port is in use, a certificate or the users file is wrong."""


class OutboxError(PublishError):
    """The SQLite outbox cannot be opened or written (path, permissions, disk)."""


class GatewayError(EdgeAgentError):
    """The escalation gateway cannot start (bad listen address, unreadable TLS files); the base of the
    errors of one Describe call."""


class RequestRejected(GatewayError):
    """A Describe request is bad (image, crop, detections or template); the message says what and why."""


class VlmError(GatewayError):
    """The VLM (Ollama) gave no usable answer. ``grpc_code`` is the name of the gRPC status it maps to."""

    grpc_code = "UNAVAILABLE"


class VlmUnavailable(VlmError):
    """Ollama is unreachable, failed, or is busy (HTTP 503); safe to retry later."""

    grpc_code = "UNAVAILABLE"


class VlmLoading(VlmUnavailable):
    """The model is still loading in Ollama (the gateway's start, an Ollama restart, keep_alive ran out);
    the message starts with "loading:". Retry later."""

    grpc_code = "UNAVAILABLE"


class VlmModelMissing(VlmError):
    """The configured model is not pulled in Ollama, or it cannot take images."""

    grpc_code = "FAILED_PRECONDITION"


class VlmModelFailed(VlmModelMissing):
    """The model cannot serve on this Ollama: it does not fit the memory, its runner keeps dying, or the
    question cannot fit its context. A retry would fail the same way; the message says what to change."""

    grpc_code = "FAILED_PRECONDITION"


class VlmTimeout(VlmError):
    """Ollama did not answer within the call's deadline or the gateway's request timeout."""

    grpc_code = "DEADLINE_EXCEEDED"


class VlmInvalidAnswer(VlmError):
    """The VLM's answer did not match the answer schema, also after the one retry."""

    grpc_code = "ABORTED"
