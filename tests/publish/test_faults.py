"""Store-and-forward under faults, against a real Mosquitto: broker outages, a SIGKILLed
agent, an outage longer than the outbox bound, refused credentials, TLS trust."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from agent.config.models import MqttConfig, TlsConfig
from agent.core.event import TagEvent
from agent.publish.local_broker import LocalMosquitto
from agent.publish.mqtt_publisher import MqttPublisher
from agent.publish.outbox import Outbox
from agent.publish.reliable import ReliablePublisher
from agent.publish.schema import validate_payload
from tests.conftest import MqttCollector

EventFactory = Callable[..., TagEvent]
REPO = pathlib.Path(__file__).resolve().parents[2]


def reliable(path: pathlib.Path, mqtt_config: MqttConfig, device: str, **outbox_kw: int) -> ReliablePublisher:
    pub = ReliablePublisher(Outbox(path, **outbox_kw), MqttPublisher.from_config(mqtt_config, device),
                            topic_prefix=mqtt_config.topic_prefix)
    pub.start()
    return pub


def first_occurrences(collector: MqttCollector) -> tuple[dict[str, list[dict]], int, int]:  # type: ignore[type-arg]
    """Payloads per camera in arrival order with duplicates (same event_id) removed; the number of
    duplicates, and how many of those the broker marked as a redelivery to the subscriber (DUP)."""
    seen: set[str] = set()
    per_camera: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    duplicates = dup_flagged = 0
    for m in list(collector.messages):
        doc = json.loads(m.payload)
        if doc["event_id"] in seen:
            duplicates += 1
            dup_flagged += bool(m.dup)
            continue
        seen.add(doc["event_id"])
        per_camera.setdefault(doc["camera"], []).append(doc)
    return per_camera, duplicates, dup_flagged


def test_broker_outage_during_a_15fps_stream_loses_nothing(tmp_path: pathlib.Path,
                                                          event_factory: EventFactory) -> None:
    frames = 90  # 6 s at 15 fps, two cameras; the broker is down from frame 20 to frame 50
    with LocalMosquitto(persistence=True) as broker:
        sub = MqttCollector(broker.port, "edge/fault-box/+/tags", client_id="fault-sub", session_expiry_s=300)
        sub.start()
        pub = reliable(tmp_path / "o.sqlite", MqttConfig(url=broker.url), "fault-box")
        try:
            assert pub.wait_connected(5)
            sent: dict[str, list[str]] = {"cam1": [], "cam2": []}
            t0 = time.monotonic()
            for i in range(1, frames + 1):
                for cam in sent:
                    event = event_factory(device="fault-box", camera=cam, sequence=i)
                    pub.publish_event(event)
                    sent[cam].append(event.event_id)
                if i == 20:
                    broker.stop()
                elif i == 50:
                    broker.start()
                time.sleep(max(0.0, t0 + i / 15 - time.monotonic()))
            assert pub.flush(30), pub.stats()
            stats = pub.stats()
            total = 2 * frames
            deadline = time.monotonic() + 20
            while len({json.loads(m.payload)["event_id"] for m in sub.messages}) < total and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            pub.stop()
            sub.close()
    per_camera, duplicates, broker_redelivered = first_occurrences(sub)
    for cam, ids in sent.items():
        assert [d["event_id"] for d in per_camera[cam]] == ids  # every event, in order per camera
        assert [d["sequence"] for d in per_camera[cam]] == list(range(1, frames + 1))
    assert stats.acked >= total and stats.pending == 0 and stats.evicted == 0
    # duplicates only from at-least-once redelivery: the broker's to the subscriber (DUP flag set),
    # or ours after the reconnect, which the publisher counted
    print(f"duplicates {duplicates}: broker redeliveries {broker_redelivered}, ours counted {stats.resent}")
    assert duplicates - broker_redelivered <= stats.resent + stats.redelivered
    assert all(validate_payload(json.loads(m.payload)) == [] for m in sub.messages)


def test_outage_longer_than_the_bound_loses_exactly_the_evicted_events(
        tmp_path: pathlib.Path, event_factory: EventFactory, caplog: pytest.LogCaptureFixture) -> None:
    with LocalMosquitto(persistence=True) as broker:
        MqttCollector(broker.port, "edge/bound-box/+/tags", client_id="bound-sub", session_expiry_s=300).start().close()
        broker.stop()
        pub = reliable(tmp_path / "o.sqlite", MqttConfig(url=broker.url), "bound-box", max_rows=20)
        try:
            events = [event_factory(device="bound-box", sequence=s) for s in range(1, 51)]
            for e in events:
                pub.publish_event(e)
            assert pub.stats().evicted == 30 and pub.stats().pending == 20
            broker.start()
            assert pub.wait_connected(15)
            assert pub.flush(15)
            stats = pub.stats()
            status = MqttCollector(broker.port, "edge/bound-box/status").start()
            assert status.wait_until(lambda m: json.loads(m.payload).get("state") == "online", timeout=5)
            status.close()
            sub = MqttCollector(broker.port, "edge/bound-box/+/tags", client_id="bound-sub",
                                session_expiry_s=300).start()
            got = sub.wait_for(20, timeout=10)
            time.sleep(0.5)  # nothing more may come
            sub.close()
        finally:
            pub.stop()
    received = [json.loads(m.payload)["event_id"] for m in sub.messages]
    assert received == [e.event_id for e in events[30:]] and len(got) == 20  # the 20 newest, in order
    assert stats.evicted == 30 == len(events) - len(received)  # exactly the evicted count is missing
    online = [json.loads(m.payload) for m in status.messages if json.loads(m.payload)["state"] == "online"]
    assert online[-1]["outbox_evicted"] == 30  # reported on the retained status topic
    assert "evicted the 30 oldest unsent event(s)" in caplog.text or "evicted the" in caplog.text


def test_refused_credentials_give_a_clear_error_and_no_busy_loop(tmp_path: pathlib.Path,
                                                                 event_factory: EventFactory,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # even paho's debug chatter must not contain the password
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "edge", "right-password"], check=True,
                   capture_output=True)
    passwords.chmod(0o600)
    wrong, right = tmp_path / "wrong.txt", tmp_path / "right.txt"
    wrong.write_text("not-the-password\n")
    right.write_text("right-password\n")
    with LocalMosquitto(extra_config=["allow_anonymous false", f"password_file {passwords}"]) as broker:
        cfg = MqttConfig(url=broker.url, username="edge", password_file=wrong)
        pub = reliable(tmp_path / "o.sqlite", cfg, "auth-box")
        try:
            pub.publish_event(event_factory(device="auth-box"))
            t0 = time.monotonic()
            assert not pub.wait_connected(5)
            assert time.monotonic() - t0 < 3  # the refusal ends the wait, not the timeout
            error = pub.stats().last_error or ""
            assert "refused the connection: Not authorized (135)" in error
            time.sleep(4)
            attempts = broker.log_text().count("New connection from 127.0.0.1")
            assert 2 <= attempts <= 6  # backoff 1 s, 2 s, 4 s...: no busy loop
            assert pub.stats().pending == 1  # the event is kept while refused
            assert "not-the-password" not in broker.log_text() + caplog.text  # never logged
            assert caplog.text.count("refused the connection") == 1  # logged once, not per retry
        finally:
            pub.stop(timeout=1)
        good = reliable(tmp_path / "o.sqlite", MqttConfig(url=broker.url, username="edge", password_file=right),
                        "auth-box")
        try:
            assert good.wait_connected(5)
            assert good.flush(5) and good.stats().acked == 1  # the event kept during the refusal
        finally:
            good.stop()


def test_sigkill_mid_stream_then_restart_delivers_every_committed_event(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "agent.yaml"
    with LocalMosquitto(persistence=True) as broker:
        config.write_text(f"device_id: kill-box\nmqtt: {{url: '{broker.url}'}}\n"
                          "cameras: [{id: belt, source: 'synthetic://conveyor?seed=3&fps=15'}]\n")
        sub = MqttCollector(broker.port, "edge/kill-box/+/tags", client_id="kill-sub", session_expiry_s=300).start()
        env = {**os.environ, "STATE_DIRECTORY": str(state)}
        cmd = [sys.executable, "-m", "agent.cli.main", "run", "--config", str(config)]
        agent = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, cwd=REPO)
        try:
            assert len(sub.wait_for(10, timeout=30)) >= 10  # it is running and publishing
            broker.stop()
            time.sleep(2.0)  # the agent keeps inspecting: events pile up in the outbox
            agent.send_signal(signal.SIGKILL)
            agent.communicate(timeout=10)  # reaps it and closes its stderr pipe
            with sqlite3.connect(f"file:{state / 'outbox.sqlite'}?mode=ro", uri=True) as db:
                committed = [r[0] for r in db.execute("SELECT event_id FROM events ORDER BY id")]
            assert len(committed) >= 5  # up to 2 s at 15 fps, fewer on a busy machine
            broker.start()
            agent = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, cwd=REPO)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                if set(committed) <= {json.loads(m.payload)["event_id"] for m in sub.messages}:
                    break
                time.sleep(0.2)
            agent.send_signal(signal.SIGTERM)
            _, err = agent.communicate(timeout=30)
            assert agent.returncode == 0, err
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.communicate(timeout=10)
            sub.close()
    received = [json.loads(m.payload) for m in sub.messages]
    ids = [d["event_id"] for d in received]
    assert set(committed) <= set(ids)  # every event committed before the kill arrived
    # and in order: the replayed ones come in the order they were committed
    positions = [ids.index(e) for e in committed]
    assert positions == sorted(positions)


# -- TLS ----------------------------------------------------------------------------------------


def make_ca(directory: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", f"/CN={name}"], check=True, capture_output=True)
    return key, cert


def make_signed(directory: pathlib.Path, name: str, ca: tuple[pathlib.Path, pathlib.Path],
                san: str | None) -> tuple[pathlib.Path, pathlib.Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                    "-subj", f"/CN={name}"], check=True, capture_output=True)
    cmd = ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial",
           "-out", str(cert), "-days", "2"]
    if san:
        ext = directory / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\n")
        cmd += ["-extfile", str(ext)]
    subprocess.run(cmd, check=True, capture_output=True)
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[pathlib.Path, pathlib.Path]]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "test-ca")
    return {"ca": ca, "other_ca": make_ca(d, "other-ca"),
            "server": make_signed(d, "server", ca, "IP:127.0.0.1,DNS:localhost"),
            "client": make_signed(d, "client", ca, None)}


def tls_broker(pki: dict[str, tuple[pathlib.Path, pathlib.Path]], mutual: bool) -> LocalMosquitto:
    lines = [f"cafile {pki['ca'][1]}", f"certfile {pki['server'][1]}", f"keyfile {pki['server'][0]}"]
    if mutual:
        lines += ["require_certificate true"]
    return LocalMosquitto(extra_config=lines)


def test_tls_with_the_test_ca_delivers(tmp_path: pathlib.Path, pki: dict, event_factory: EventFactory) -> None:  # type: ignore[type-arg]
    with tls_broker(pki, mutual=False) as broker:
        cfg = MqttConfig(url=f"mqtts://127.0.0.1:{broker.port}", tls=TlsConfig(ca_file=pki["ca"][1]))
        pub = reliable(tmp_path / "o.sqlite", cfg, "tls-box")
        try:
            assert pub.wait_connected(10), pub.stats().last_error
            pub.publish_event(event_factory(device="tls-box"))
            assert pub.flush(10) and pub.stats().acked == 1
        finally:
            pub.stop()


def test_tls_with_a_wrong_ca_fails_with_a_clear_message(tmp_path: pathlib.Path, pki: dict) -> None:  # type: ignore[type-arg]
    with tls_broker(pki, mutual=False) as broker:
        cfg = MqttConfig(url=f"mqtts://127.0.0.1:{broker.port}", tls=TlsConfig(ca_file=pki["other_ca"][1]))
        pub = reliable(tmp_path / "o.sqlite", cfg, "tls-box")
        try:
            assert not pub.wait_connected(3)
            error = pub.stats().last_error or ""
        finally:
            pub.stop(timeout=1)
    assert "the broker's certificate was not accepted" in error and "check mqtt.tls.ca_file" in error
    assert "certificate" in error and f"127.0.0.1:{broker.port}" in error


def test_mutual_tls_needs_the_client_certificate(tmp_path: pathlib.Path, pki: dict,  # type: ignore[type-arg]
                                                 event_factory: EventFactory) -> None:
    with tls_broker(pki, mutual=True) as broker:
        url = f"mqtts://127.0.0.1:{broker.port}"
        with_cert = MqttConfig(url=url, tls=TlsConfig(ca_file=pki["ca"][1], cert_file=pki["client"][1],
                                                      key_file=pki["client"][0]))
        pub = reliable(tmp_path / "a.sqlite", with_cert, "mtls-box")
        try:
            assert pub.wait_connected(10), pub.stats().last_error
            pub.publish_event(event_factory(device="mtls-box"))
            assert pub.flush(10)
        finally:
            pub.stop()
        without = reliable(tmp_path / "b.sqlite", MqttConfig(url=url, tls=TlsConfig(ca_file=pki["ca"][1])),
                           "mtls-box")
        try:
            assert not without.wait_connected(3)
            assert "cannot connect to broker" in (without.stats().last_error or "")
        finally:
            without.stop(timeout=1)


def test_password_from_a_systemd_credential_end_to_end(tmp_path: pathlib.Path) -> None:
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "edge", "s3cret-from-credential"], check=True,
                   capture_output=True)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt-password").write_text("s3cret-from-credential\n")
    config = tmp_path / "agent.yaml"
    with LocalMosquitto(extra_config=["allow_anonymous false", f"password_file {passwords}"]) as broker:
        config.write_text(f"device_id: cred-box\nmqtt: {{url: '{broker.url}', username: edge, "
                          "password_credential: mqtt-password}\nlogging: {level: debug}\n"
                          "cameras: [{id: belt, source: 'synthetic://conveyor?fps=0&frames=4'}]\n")
        env = {**os.environ, "CREDENTIALS_DIRECTORY": str(creds)}
        proc = subprocess.run([sys.executable, "-m", "agent.cli.main", "run", "--config", str(config)], env=env,
                              capture_output=True, text=True, timeout=90, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        assert "inspected 4 frames" in proc.stderr
        assert "s3cret-from-credential" not in proc.stderr + proc.stdout  # debug logs included
        missing = subprocess.run([sys.executable, "-m", "agent.cli.main", "run", "--config", str(config)],
                                 capture_output=True, text=True, timeout=60, cwd=REPO,
                                 env={k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"})
    assert missing.returncode == 2 and "$CREDENTIALS_DIRECTORY is not set" in missing.stderr


def test_sigterm_while_the_broker_is_away_exits_promptly_and_keeps_the_events(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "agent.yaml"
    with LocalMosquitto() as broker:
        config.write_text(f"device_id: term-box\nmqtt: {{url: '{broker.url}'}}\n"
                          "cameras: [{id: belt, source: 'synthetic://conveyor?seed=5&fps=15'}]\n")
        agent = subprocess.Popen([sys.executable, "-m", "agent.cli.main", "run", "--config", str(config)],
                                 env={**os.environ, "STATE_DIRECTORY": str(state)}, stderr=subprocess.PIPE,
                                 text=True, cwd=REPO)
        try:
            sub = MqttCollector(broker.port, "edge/term-box/+/tags").start()
            assert sub.wait_for(3, timeout=30)
            sub.close()
            broker.stop()
            time.sleep(1.0)  # events pile up in the outbox
            t0 = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            _, err = agent.communicate(timeout=30)
            took = time.monotonic() - t0
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.communicate(timeout=10)
    assert agent.returncode == 0, err
    assert took < 6, f"shutdown took {took:.1f} s with the broker away"
    with sqlite3.connect(f"file:{state / 'outbox.sqlite'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] > 0  # kept for the next start


def test_forwarder_waits_instead_of_spinning_while_the_broker_is_away(tmp_path: pathlib.Path,
                                                                      event_factory: EventFactory) -> None:
    with LocalMosquitto() as broker:
        broker.stop()
        pub = reliable(tmp_path / "o.sqlite", MqttConfig(url=broker.url), "spin-box")
        try:
            before = pub.forwarder_passes
            t0 = time.monotonic()
            for s in range(1, 201):  # new rows keep arriving while it cannot send
                pub.publish_event(event_factory(device="spin-box", sequence=s))
                time.sleep(0.005)
            passes = pub.forwarder_passes - before
            elapsed = time.monotonic() - t0
        finally:
            pub.stop(timeout=1)
    # blocked, it sleeps up to 0.2 s per pass and wakes for each commit: at most one pass per commit plus
    # five per second; a spinning forwarder makes tens of thousands
    assert passes <= 200 + 5 * elapsed + 5, passes


def test_a_batch_of_events_is_committed_at_once_and_every_one_arrives_in_order(
        mosquitto: LocalMosquitto, tmp_path: pathlib.Path, event_factory: EventFactory) -> None:
    sub = MqttCollector(mosquitto.port, "edge/batch-box/+/tags", client_id="batch-sub").start()
    pub = reliable(tmp_path / "o.sqlite", MqttConfig(url=mosquitto.url), "batch-box")
    try:
        assert pub.wait_connected(10.0)
        batches = [[event_factory(device="batch-box", camera=f"cam{c}", sequence=s) for c in (1, 2)]
                   for s in range(1, 6)]
        ids = [row for batch in batches for row in pub.publish_events(batch)]
        assert ids == sorted(ids) and len(set(ids)) == 10
        assert pub.flush(10.0)
        got = [json.loads(m.payload) for m in sub.wait_for(10, timeout=10.0)]
        assert [(d["camera"], d["sequence"]) for d in got] == [(e.camera, e.sequence) for b in batches for e in b]
        for doc in got:
            validate_payload(doc)
        st = pub.stats()
        assert (st.committed, st.acked, st.pending) == (10, 10, 0)
    finally:
        pub.stop()
        sub.close()
