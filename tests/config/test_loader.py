"""Tests of agent.config.loader: YAML with line numbers, every problem at once, env overrides."""

from __future__ import annotations

import os
import pathlib
import textwrap
from collections.abc import Callable

import pytest

from agent.config import AgentConfig, check_config, load_config
from agent.config.models import DEFAULT_PREFILTER, ModelConfig
from agent.errors import ConfigError

VALID = """\
device_id: line-3
cameras:
  - id: cam1
    source: rtsp://10.0.0.5/stream
    fps: 5
    realtime: true
  - id: cam2
    source: synthetic://conveyor?seed=2
    triage: {accept: 0.8, reject: 0.1}
model:
  path: /opt/models/det.onnx
  providers: [CUDAExecutionProvider, CPUExecutionProvider]
  intra_op_threads: 4
triage:
  accept: 0.7
mqtt:
  url: mqtts://broker.local:8883
  topic_prefix: plant/a
logging:
  level: info
  json: true
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No EDGE_AGENT_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("EDGE_AGENT_"):
            monkeypatch.delenv(name)


def write(tmp_path: pathlib.Path, text: str, name: str = "agent.yaml") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: pathlib.Path | None, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env)
    return info.value.problems


def test_valid_file_loads_with_types(tmp_path: pathlib.Path) -> None:
    config = load_config(write(tmp_path, VALID), env={})
    assert isinstance(config, AgentConfig)
    assert config.device_id == "line-3"
    assert [c.id for c in config.cameras] == ["cam1", "cam2"]
    assert config.cameras[0].fps == 5.0 and isinstance(config.cameras[0].fps, float)
    assert config.cameras[0].realtime is True
    assert config.triage_for(config.cameras[1]).accept == 0.8
    assert config.triage_for(config.cameras[0]).accept == 0.7
    assert config.model.path == pathlib.Path("/opt/models/det.onnx")
    assert config.model.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert config.model.intra_op_threads == 4
    assert (config.mqtt.host, config.mqtt.port) == ("broker.local", 8883)
    assert config.logging.level == "info" and config.logging.json_format is True


@pytest.mark.parametrize(
    "text",
    [
        "",  # empty file
        "# only a comment\n\n",  # comments only
        "---\n",  # an empty document
    ],
)
def test_empty_file_means_defaults(tmp_path: pathlib.Path, text: str) -> None:
    assert load_config(write(tmp_path, text), env={}) == load_config(None, env={})


def test_no_file_means_defaults() -> None:
    config = load_config(None, env={"HOME": "/home/op"})
    assert config.model_copy(update={"outbox": AgentConfig().outbox}) == AgentConfig()
    assert config.model.path == DEFAULT_PREFILTER
    assert config.outbox.path == pathlib.Path("/home/op/.local/state/edge-agent/outbox.sqlite")
    assert check_config(None, env={}) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown key at top level: names AgentConfig's fields, line of the key
        (
            "device_id: a\ncolour: red\n",
            "colour (line 2): unknown key; expected one of: "
            "device_id, cameras, model, triage, mqtt, outbox, snapshots, escalation, logging, metrics, health, "
            "dataset, images, mode, learn, opcua_server, sparkplug, plc, taxonomy",
        ),
        # unknown nested key: names ModelConfig's fields
        (
            "model:\n  path: /m.onnx\n  bogus: 1\n",
            "model.bogus (line 3): unknown key; expected one of: path, runtime, providers, precision, "
            "engine_cache_dir, gpu_device, intra_op_threads, concurrent_runs, min_score, iou_threshold, "
            "max_detections, max_batch, input_size, require_gate",
        ),
        # unknown key inside a list item: names CameraConfig's fields
        (
            "cameras:\n  - id: a\n    source: s\n    url: x\n",
            "cameras[0].url (line 4): unknown key; expected one of: id, source, fps, realtime, triage, "
            "escalation_rate, reconnect_initial_s, reconnect_max_s, record, mode, learn, zones, plc, "
            "decoder, decode_threads, skip_deblocking, hwaccel, decoder_scaling",
        ),
        # an aliased field is listed under its YAML name
        (
            "logging:\n  json_format: true\n",
            "logging.json_format (line 2): unknown key; expected one of: level, json",
        ),
        # wrong type: line of the key and the value given
        (
            "device_id: a\ntriage:\n  accept: high\n",
            "triage.accept (line 3): Input should be a valid number, "
            "unable to parse string as a number (got 'high')",
        ),
        # missing required field: the camera item's line
        (
            "cameras:\n  - id: a\n    source: s\n  - id: b\n    fps: 2\n",
            "cameras[1].source (line 4): Field required",
        ),
        # a validator's message without pydantic's "Value error, " prefix
        (
            "mqtt:\n  url: http://x\n",
            "mqtt.url (line 2): 'http://x' is not a broker URL; "
            "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
        ),
        # reject above accept: reported on the triage mapping's line
        (
            "device_id: a\ntriage:\n  accept: 0.3\n  reject: 0.5\n",
            "triage (line 2): reject (0.5) must not be above accept (0.3)",
        ),
        # duplicate camera ids: a whole-config check, so the top level
        (
            "cameras:\n  - {id: a, source: s}\n  - {id: a, source: t}\n",
            "top level (line 1): camera id 'a' appears more than once; ids must be unique",
        ),
        # duplicate key in one mapping: PyYAML would silently keep the last
        (
            "mqtt:\n  url: mqtt://a\n  topic_prefix: p\n  url: mqtt://b\n",
            "mqtt.url (line 4): duplicate key, first at line 2",
        ),
        # duplicate key at the top level
        (
            "device_id: a\nmqtt: {}\ndevice_id: b\n",
            "device_id (line 3): duplicate key, first at line 1",
        ),
        # an empty list of cameras
        (
            "cameras: []\n",
            "cameras (line 1): List should have at least 1 item after validation, not 0",
        ),
    ],
)
def test_single_problem(tmp_path: pathlib.Path, text: str, expected: str) -> None:
    assert problems_of(write(tmp_path, text)) == [expected]


def test_every_problem_is_reported_together(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, """\
        device_id: a
        mqtt:
          url: http://x
        cameras:
          - id: a
          - id: b
            source: s
            fps: fast
        model:
          bogus: 1
        mqtt:
          url: mqtt://ok
          keepalive_s: 1
        """)
    problems = problems_of(path)
    assert problems == [
        "mqtt (line 11): duplicate key, first at line 2",
        "cameras[0].source (line 5): Field required",
        "cameras[1].fps (line 8): Input should be a valid number, "
        "unable to parse string as a number (got 'fast')",
        "model.bogus (line 10): unknown key; expected one of: path, runtime, providers, precision, "
        "engine_cache_dir, gpu_device, intra_op_threads, concurrent_runs, min_score, iou_threshold, max_detections, "
        "max_batch, input_size, require_gate",
        # the later mqtt mapping is the one kept, and its lines are the ones reported
        "mqtt.keepalive_s (line 13): Input should be greater than or equal to 5 (got 1)",
    ]
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: 5 problem(s)\n  - mqtt (line 11)")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # "key: value" indented under a scalar
        ("device_id: a\nmqtt:\n  url: x\n   bad: y: z\n",
         "line 4, column 7: mapping values are not allowed here"),
        # unclosed flow list
        ("model:\n  providers: [a, b\n",
         "line 3, column 1: expected ',' or ']', but got '<stream end>' "
         "(while parsing a flow sequence at line 2)"),
        # a tab used for indentation
        ("mqtt:\n\turl: x\n",
         "line 2, column 1: found character '\\t' that cannot start any token "
         "(while scanning for the next token)"),
        # two documents in one file
        ("device_id: a\n---\ndevice_id: b\n",
         "line 2, column 1: but found another document (expected a single document in the stream at line 1)"),
        # python tags are not constructed by the safe loader
        ("device_id: !!python/object:os.system x\n",
         "line 1, column 12: could not determine a constructor for the tag "
         "'tag:yaml.org,2002:python/object:os.system'"),
    ],
)
def test_yaml_syntax_error_has_line_and_column(tmp_path: pathlib.Path, text: str, expected: str) -> None:
    assert problems_of(write(tmp_path, text)) == [expected]


@pytest.mark.parametrize(
    ("text", "got"),
    [
        ("- device_id: a\n- mqtt: {}\n", "a list"),  # a list of mappings
        ("just a string\n", "a string"),  # a scalar
        ("42\n", "a int"),  # a number
    ],
)
def test_top_level_must_be_a_mapping(tmp_path: pathlib.Path, text: str, got: str) -> None:
    assert problems_of(write(tmp_path, text)) == [
        "top level (line 1): expected a mapping of settings "
        "(device_id, cameras, model, triage, mqtt, outbox, snapshots, escalation, logging, metrics, health, "
        "dataset, images, mode, learn, opcua_server, sparkplug, plc, taxonomy), "
        f"got {got}"
    ]


def test_file_not_found_names_the_path(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert info.value.problems == [f"{missing}: no such config file"]
    assert info.value.source == str(missing)


def test_unreadable_path_names_the_path(tmp_path: pathlib.Path) -> None:
    # a directory cannot be read as a file
    (problem,) = problems_of(tmp_path)
    assert problem.startswith(f"{tmp_path}: cannot read the config file: ")


def test_invalid_utf8_is_a_config_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"device_id: \xff\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: cannot read the config file: ")


# --- environment overrides -----------------------------------------------------------------------

BASE = "device_id: a\ncameras:\n  - id: c0\n    source: s0\n  - id: c1\n    source: s1\nmqtt:\n  url: mqtt://file\n"


@pytest.mark.parametrize(
    ("env", "check"),
    [
        # nested value; the override wins over the file
        ({"EDGE_AGENT_MQTT__URL": "mqtt://b:1883"}, lambda c: c.mqtt.url == "mqtt://b:1883"),
        # top-level value
        ({"EDGE_AGENT_DEVICE_ID": "box7"}, lambda c: c.device_id == "box7"),
        # a field of a list item
        ({"EDGE_AGENT_CAMERAS__1__SOURCE": "rtsp://x/y"},
         lambda c: [k.source for k in c.cameras] == ["s0", "rtsp://x/y"]),
        # a flow list parsed as YAML
        ({"EDGE_AGENT_MODEL__PROVIDERS": "[CUDAExecutionProvider, CPUExecutionProvider]"},
         lambda c: c.model.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]),
        # numbers and booleans parsed as YAML
        ({"EDGE_AGENT_CAMERAS__0__FPS": "2.5", "EDGE_AGENT_CAMERAS__0__REALTIME": "false"},
         lambda c: c.cameras[0].fps == 2.5 and c.cameras[0].realtime is False),
        # a section the file does not have is created
        ({"EDGE_AGENT_TRIAGE__ACCEPT": "0.9"}, lambda c: c.triage.accept == 0.9),
        # a quoted value stays a string
        ({"EDGE_AGENT_DEVICE_ID": '"007"'}, lambda c: c.device_id == "007"),
        # EDGE_AGENT_CONFIG names the file for the CLI: not an override (would be an unknown key)
        ({"EDGE_AGENT_CONFIG": "/etc/x.yaml"}, lambda c: c.device_id == "a"),
        # the logging section is overridable like any other
        ({"EDGE_AGENT_LOGGING__LEVEL": "debug"}, lambda c: c.logging.level == "debug"),
        # a number where a string is expected becomes the string
        ({"EDGE_AGENT_DEVICE_ID": "123"}, lambda c: c.device_id == "123"),
        # other variables are not looked at
        ({"PATH": "/bin", "EDGE_AGENTX": "1"}, lambda c: c.device_id == "a"),
    ],
)
def test_env_override(
    tmp_path: pathlib.Path, env: dict[str, str], check: Callable[[AgentConfig], bool]
) -> None:
    config = load_config(write(tmp_path, BASE), env=env)
    assert check(config)


def test_env_defaults_to_os_environ(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, BASE)
    monkeypatch.setenv("EDGE_AGENT_MQTT__TOPIC_PREFIX", "site9")
    assert load_config(path).mqtt.topic_prefix == "site9"
    assert load_config(path, env={}).mqtt.topic_prefix == "edge"  # an explicit env replaces os.environ


def test_env_override_without_file_uses_default_cameras() -> None:
    config = load_config(None, env={"EDGE_AGENT_CAMERAS__0__SOURCE": "/dev/video0"})
    assert [(c.id, c.source) for c in config.cameras] == [("conveyor1", "/dev/video0")]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # a value the model rejects names the variable, not a line
        ({"EDGE_AGENT_MQTT__URL": "http://x"},
         "mqtt.url (environment EDGE_AGENT_MQTT__URL): 'http://x' is not a broker URL; "
         "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"),
        # wrong type from the environment
        ({"EDGE_AGENT_MQTT__KEEPALIVE_S": "soon"},
         "mqtt.keepalive_s (environment EDGE_AGENT_MQTT__KEEPALIVE_S): Input should be a valid integer, "
         "unable to parse string as an integer (got 'soon')"),
        # an unknown key from the environment
        ({"EDGE_AGENT_MQTT__HOST": "b"},
         "mqtt.host (environment EDGE_AGENT_MQTT__HOST): unknown key; expected one of: url, topic_prefix, "
         "client_id, protocol, keepalive_s, max_queued, session_expiry_s, username, password_file, "
         "password_credential, tls, stats_interval_s"),
        # an index past the end of the file's list
        ({"EDGE_AGENT_CAMERAS__2__SOURCE": "x"},
         "cameras[2] (environment EDGE_AGENT_CAMERAS__2__SOURCE): index 2 is past the end of the list "
         "(2 item(s)); add the item to the config file first"),
        # a word where a list index is needed
        ({"EDGE_AGENT_CAMERAS__FIRST__SOURCE": "x"},
         "cameras.first (environment EDGE_AGENT_CAMERAS__FIRST__SOURCE): cameras is a list; "
         "expected a number as the index"),
        # descending into a scalar
        ({"EDGE_AGENT_DEVICE_ID__X": "y"},
         "device_id.x (environment EDGE_AGENT_DEVICE_ID__X): device_id is a string, not a mapping or a list"),
        # a value that is not YAML
        ({"EDGE_AGENT_MODEL__PROVIDERS": "[CPUExecutionProvider"},
         "model.providers (environment EDGE_AGENT_MODEL__PROVIDERS): value is not valid YAML: "
         "expected ',' or ']', but got '<stream end>'"),
        # an empty level in the name
        ({"EDGE_AGENT_MQTT____URL": "mqtt://b"},
         "environment EDGE_AGENT_MQTT____URL: empty key; expected EDGE_AGENT_KEY[__KEY...], "
         "e.g. EDGE_AGENT_MQTT__URL"),
    ],
)
def test_bad_env_value_names_the_variable(tmp_path: pathlib.Path, env: dict[str, str], expected: str) -> None:
    assert problems_of(write(tmp_path, BASE), env) == [expected]


def test_file_and_env_problems_are_reported_together(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, BASE + "triage:\n  accept: 0.2\n")
    problems = problems_of(path, {"EDGE_AGENT_CAMERAS__5__ID": "x", "EDGE_AGENT_MQTT__URL": "ftp://x"})
    assert problems == [
        "cameras[5] (environment EDGE_AGENT_CAMERAS__5__ID): index 5 is past the end of the list "
        "(2 item(s)); add the item to the config file first",
        # the file's triage band is wrong on its own (default reject 0.25 > accept 0.2)
        "triage (line 9): reject (0.25) must not be above accept (0.2)",
        "mqtt.url (environment EDGE_AGENT_MQTT__URL): 'ftp://x' is not a broker URL; "
        "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
    ]


# --- model path ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("model_path", "expected"),
    [
        ("models/x.onnx", "conf/models/x.onnx"),  # relative: against the config file's directory
        ("../x.onnx", "conf/../x.onnx"),  # parent directories are kept as written
        ("/abs/x.onnx", "/abs/x.onnx"),  # absolute: unchanged
    ],
)
def test_relative_model_path_is_resolved_against_the_file(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, model_path: str, expected: str
) -> None:
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", f"model:\n  path: {model_path}\n")
    monkeypatch.chdir("/")  # the working directory must not matter
    config = load_config(path, env={})
    want = pathlib.Path(expected) if expected.startswith("/") else tmp_path.resolve() / expected
    assert config.model.path == want


def test_relative_config_path_still_gives_absolute_model_path(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", "model: {path: models/x.onnx}\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/agent.yaml", env={})
    assert config.model.path == tmp_path.resolve() / "etc" / "models" / "x.onnx"


def test_default_model_path_stays(tmp_path: pathlib.Path) -> None:
    config = load_config(write(tmp_path, "model:\n  intra_op_threads: 1\n"), env={})
    assert config.model.path == DEFAULT_PREFILTER


def test_env_model_path_is_not_rebased_on_the_file(tmp_path: pathlib.Path) -> None:
    config = load_config(write(tmp_path, "device_id: a\n"), env={"EDGE_AGENT_MODEL__PATH": "m/x.onnx"})
    assert config.model.path == pathlib.Path("m/x.onnx")


# --- check_config --------------------------------------------------------------------------------

def test_check_config(tmp_path: pathlib.Path) -> None:
    assert check_config(write(tmp_path, VALID, "good.yaml"), env={}) == []
    assert check_config(write(tmp_path, "mqtt:\n  url: nope\n", "bad.yaml"), env={}) == [
        "mqtt.url (line 2): 'nope' is not a broker URL; expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
    ]
    missing = tmp_path / "missing.yaml"
    assert check_config(missing, env={}) == [f"{missing}: no such config file"]


# --- model threads and concurrent runs -------------------------------------------------------------

@pytest.mark.parametrize(("cores", "runs", "threads"), [(1, 1, 1), (2, 2, 1), (4, 2, 2), (16, 2, 8)])
def test_the_default_runs_share_out_the_cores(monkeypatch: pytest.MonkeyPatch, cores: int, runs: int,
                                              threads: int) -> None:
    monkeypatch.setattr("agent.config.model.os.cpu_count", lambda: cores)
    model = ModelConfig()
    assert (model.concurrent_runs, model.intra_op_threads) == (runs, threads)


def test_threads_left_out_follow_the_runs_asked_for(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.config.model.os.cpu_count", lambda: 8)
    assert load_config(write(tmp_path, "model:\n  concurrent_runs: 4\n"), env={}).model.intra_op_threads == 2
    from_env = load_config(write(tmp_path, "device_id: a\n"), env={"EDGE_AGENT_MODEL__CONCURRENT_RUNS": "1"})
    assert (from_env.model.concurrent_runs, from_env.model.intra_op_threads) == (1, 8)
    both = load_config(write(tmp_path, "model:\n  concurrent_runs: 4\n  intra_op_threads: 3\n"), env={})
    assert (both.model.concurrent_runs, both.model.intra_op_threads) == (4, 3)


def test_concurrent_runs_out_of_range_is_named(tmp_path: pathlib.Path) -> None:
    problems = check_config(write(tmp_path, "model:\n  concurrent_runs: 0\n"), env={})
    assert len(problems) == 1 and problems[0].startswith("model.concurrent_runs (line 2):")
    assert "greater than or equal to 1" in problems[0]
