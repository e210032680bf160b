"""``edge-agent tail`` against a broker it cannot trust and one that needs a login: broker strings are shown
with terminal control characters escaped; the password comes from a file or the environment, never argv."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.errors import PublishError
from agent.publish.local_broker import LocalMosquitto
from agent.publish.tail import broker_login, printable, tail

EDGE_AGENT = [sys.executable, "-m", "agent.cli.main"]
ESC = "\x1b"


@pytest.mark.parametrize(("text", "shown"), [
    ("box1/cam1  #42  defect", "box1/cam1  #42  defect"),  # nothing to escape
    ("cam\x1b[2J\x1b[31m", "cam\\x1b[2J\\x1b[31m"),  # clear the screen, recolour
    ("a\rb\x07", "a\\x0db\\x07"),  # overwrite the line, bell
    ("x\x9b31m", "x\\x9b31m"),  # a C1 control sequence introducer
    ("evil\u202etxt.exe\u200b", "evil\\u202etxt.exe\\u200b"),  # bidi override, zero-width space
    ("scratch 0.91 – ok ✓", "scratch 0.91 – ok ✓"),  # printable non-ASCII stays
])
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_hostile_broker_strings_reach_the_terminal_escaped(mosquitto: LocalMosquitto) -> None:
    lines: list[str] = []
    subscribed = threading.Event()
    event = {"device": f"box{ESC}]0;owned{chr(7)}", "camera": f"cam{ESC}[2J", "sequence": 1, "verdict": "defect",
             "decided_by": "vlm", "captured_at": "2026-12-04T10:00:00Z",
             "tags": [{"label": f"scratch{ESC}[8m", "confidence": 0.9}],
             "escalation": {"status": "answered", "reason": f"ok\r{ESC}[1A"}}
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(tail(
        mosquitto.url, count=2, timeout=20, out=lines.append, on_subscribed=subscribed.set)))
    worker.start()
    assert subscribed.wait(10)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    pub.publish("edge/box1/cam1/tags", json.dumps(event), qos=1).wait_for_publish(5)
    # Mosquitto refuses C0/C1 controls in topics; a bidi override passes
    pub.publish("edge/box\u202e1/cam1/tags", f"not json {ESC}[2J", qos=1).wait_for_publish(5)
    worker.join(25)
    pub.loop_stop()
    pub.disconnect()
    assert result == [1] and len(lines) == 2
    assert not any(ESC in line or "\r" in line or chr(7) in line for line in lines), lines
    assert "box\\x1b]0;owned\\x07/cam\\x1b[2J" in lines[0] and "reason" not in lines[0]
    assert lines[1].startswith("INVALID edge/box\\u202e1/cam1/tags: not JSON")


@pytest.fixture(scope="module")
def login_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMosquitto]:
    """A broker that refuses anonymous clients; user ``viewer``, password ``s3cret-pw``."""
    passwd = tmp_path_factory.mktemp("broker") / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "viewer", "s3cret-pw"], check=True,
                   capture_output=True)
    with LocalMosquitto(extra_config=["allow_anonymous false", f"password_file {passwd}"]) as broker:
        yield broker


@pytest.mark.parametrize("how", ["file", "env"])
def test_tail_logs_in_with_a_password_from_a_file_or_the_environment(
        login_broker: LocalMosquitto, tmp_path: pathlib.Path, how: str) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-pw\n")
    args = ["--password-file", str(secret)] if how == "file" else []
    env = {**os.environ, "EDGE_TAIL_PASSWORD": "s3cret-pw"} if how == "env" else dict(os.environ)
    started = time.monotonic()
    proc = subprocess.run([*EDGE_AGENT, "tail", "--broker", login_broker.url, "--username", "viewer", *args,
                           "--timeout", "1.5"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 1.5  # it stayed subscribed until its timeout
    assert "s3cret-pw" not in proc.stderr + proc.stdout


def test_tail_without_the_password_is_refused_and_says_why(login_broker: LocalMosquitto) -> None:
    proc = subprocess.run([*EDGE_AGENT, "tail", "--broker", login_broker.url, "--username", "viewer",
                           "--timeout", "3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "refused the connection: Not authorized" in proc.stderr


@pytest.mark.parametrize(("username", "password_file", "env", "message"), [
    # a password without a user name
    (None, None, {"EDGE_TAIL_PASSWORD": "pw"}, "a broker password needs a user name"),
    # a file that is not there
    ("viewer", "missing", {}, "--password-file .*missing: cannot read it"),
])
def test_bad_login_options_are_named(tmp_path: pathlib.Path, username: str | None, password_file: str | None,
                                     env: dict[str, str], message: str) -> None:
    with pytest.raises(PublishError, match=message):
        broker_login(username, tmp_path / password_file if password_file else None, env)


def test_an_error_quoting_the_broker_url_hides_its_password() -> None:
    proc = subprocess.run([*EDGE_AGENT, "tail", "--broker", "http://viewer:s3cret-pw@127.0.0.1:1883", "--timeout", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not a broker URL" in proc.stderr
    assert "s3cret-pw" not in proc.stderr and "http://***:***@127.0.0.1:1883" in proc.stderr
