"""Typed configuration: the pydantic models and the YAML/environment loader."""

from agent.config.loader import check_config, load_config
from agent.config.models import (
    AgentConfig,
    CameraConfig,
    LoggingConfig,
    ModelConfig,
    MqttConfig,
    TriageConfig,
)

__all__ = [
    "AgentConfig",
    "CameraConfig",
    "LoggingConfig",
    "ModelConfig",
    "MqttConfig",
    "TriageConfig",
    "check_config",
    "load_config",
]
