"""The gateway's config: defaults, the YAML file and EDGE_GATEWAY_* overrides, clear problems."""

from __future__ import annotations

import pathlib

import pytest

from agent.capture.synthetic import DEFECT_CLASSES
from agent.errors import ConfigError
from agent.gateway.config import GatewayConfig, load_gateway_config


def test_defaults_run_with_no_file() -> None:
    config = load_gateway_config(None, env={})
    assert config.listen == "127.0.0.1:50061" and config.tls is None
    assert (config.ollama.host, config.ollama.model, config.ollama.keep_alive) == (
        "http://127.0.0.1:11434", "llava:7b", "30m")
    assert config.ollama.temperature <= 0.2 and config.ollama.num_ctx is None  # the model's own (Modelfile)
    assert (config.limits.parallel, config.limits.queue) == (1, 8)
    assert config.limits.max_message_bytes > config.limits.max_image_bytes
    assert tuple(config.defect_classes) == DEFECT_CLASSES  # the shipped detector's classes


def test_file_and_environment(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("listen: unix:/run/edge/gw.sock\nollama:\n  model: edge-inspector\n  keep_alive: -1\n"
                    "limits:\n  parallel: 4\ntls:\n  cert_file: certs/gw.crt\n  key_file: /etc/gw.key\n")
    config = load_gateway_config(path, env={"EDGE_GATEWAY_LIMITS__QUEUE": "32", "EDGE_GATEWAY_CONFIG": "ignored",
                                            "EDGE_AGENT_MQTT__URL": "not ours"})
    assert config.listen == "unix:/run/edge/gw.sock" and config.ollama.model == "edge-inspector"
    assert config.ollama.keep_alive == -1 and (config.limits.parallel, config.limits.queue) == (4, 32)
    assert config.tls is not None
    assert config.tls.cert_file == tmp_path / "certs" / "gw.crt"  # relative to the file
    assert config.tls.key_file == pathlib.Path("/etc/gw.key")


PROBLEMS = [
    # (id, YAML, words in the problem line)
    ("unknown key", "ollama:\n  modle: llava:7b\n", ["ollama.modle (line 2): unknown key", "model, timeout_s"]),
    ("host without port", "ollama:\n  host: http://gpu-box\n", ["ollama.host (line 2)", "no port", "gpu-box:11434"]),
    ("host without scheme", "ollama:\n  host: gpu-box:11434\n", ["not an Ollama URL"]),
    ("temperature too high", "ollama:\n  temperature: 0.7\n", ["ollama.temperature (line 2)", "0.2"]),
    ("bad keep_alive", "ollama:\n  keep_alive: a while\n", ["ollama.keep_alive", "'30m'"]),
    ("bad listen", "listen: localhost\n", ["listen (line 1)", "HOST:PORT"]),
    ("message limit below image limit", "limits:\n  max_image_bytes: 10000000\n  max_message_bytes: 5000000\n",
     ["limits (line 1)", "max_message_bytes (5000000) must be at least max_image_bytes"]),
    ("parallel 0", "limits:\n  parallel: 0\n", ["limits.parallel (line 2)", "greater than or equal to 1"]),
    ("tls without key", "tls:\n  cert_file: a.crt\n", ["tls.key_file (line 1)", "Field required"]),
    ("not a mapping", "- listen\n", ["top level (line 1): expected a mapping", "listen, ollama, limits"]),
]


@pytest.mark.parametrize(("text", "words"), [p[1:] for p in PROBLEMS], ids=[p[0] for p in PROBLEMS])
def test_problems_name_the_field_and_line(tmp_path: pathlib.Path, text: str, words: list[str]) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path, env={})
    for word in words:
        assert word in str(info.value)


def test_an_environment_problem_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"ollama.num_ctx \(environment EDGE_GATEWAY_OLLAMA__NUM_CTX\)"):
        load_gateway_config(None, env={"EDGE_GATEWAY_OLLAMA__NUM_CTX": "lots"})


def test_the_config_is_frozen() -> None:
    config = GatewayConfig()
    with pytest.raises(ValueError, match="frozen"):
        config.listen = "0.0.0.0:1"  # type: ignore[misc]
