"""``edge-agent fleet rollout`` and ``fleet rollback`` (real processes) against four boxes' ``fleet serve``
(tests/fleet/boxes.py) over a real Mosquitto: a canary whose gate refuses the model stops the rollout with the other
three untouched; a model that passes reaches all four; the rollback puts every box back byte for byte; a box out of
reach, a digest mismatch (refused by the box) and a malformed manifest change nothing.

The refused model is a real, worse one: the shipped FP32 detector blind to scratches (tests/prefilter/model_surgery.py);
the accepted one the shipped FP32 detector, over the shipped INT8 detector every box runs.
"""

from __future__ import annotations

import functools
import http.server
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from agent.config.models import DEFAULT_MODEL
from agent.prefilter.model_info import file_digest
from agent.publish.local_broker import LocalMosquitto
from agent.tooling.dataset.synth import write_synthetic_dataset
from agent.tooling.fleet.manifest import load_manifest
from tests.cli.test_models_cli import EDGE_AGENT, assert_fails_cleanly, edge_agent
from tests.fleet.boxes import DEVICES, KEY, Box, make_box, serving
from tests.prefilter.model_surgery import blind_detector
from tests.test_docs import EXAMPLES, Example


@pytest.fixture(scope="module")
def val(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("val") / "heldout"
    write_synthetic_dataset(root, 1, 6, seed=21)  # seed 21: not the shipped detector's training stream (7)
    return root


@pytest.fixture(scope="module")
def blind(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return blind_detector(tmp_path_factory.mktemp("blind") / "blind-scratch.onnx", 0)


def manifest(tmp_path: pathlib.Path, broker_url: str, model: pathlib.Path, boxes: tuple[str, ...] = DEVICES,
             sha256: str | None = None, extra: str = "", source: str | None = None) -> pathlib.Path:
    (tmp_path / "fleet.key").write_text(KEY.decode() + "\n")
    path = tmp_path / "rollout.yaml"
    path.write_text(f"broker: {{url: '{broker_url}'}}\nsecret_file: fleet.key\n"
                    f"model: {{source: '{source or model}', sha256: {sha256 or file_digest(model)}}}\n"
                    f"boxes: [{', '.join(boxes)}]\ncanary: {boxes[0]}\n"
                    "watch: {window_s: 0}\ntimeouts: {reach_s: 5, canary_s: 90, box_s: 120}\n" + extra)
    return path


@pytest.fixture()
def four(tmp_path: pathlib.Path, mosquitto: LocalMosquitto, val: pathlib.Path) -> Iterator[list[Box]]:
    boxes = [make_box(tmp_path / "boxes", d, mosquitto.url) for d in DEVICES]
    with serving(boxes, mosquitto.url, val):
        yield boxes


@pytest.mark.timeout(240)
def test_a_canary_that_fails_its_gate_stops_the_rollout(tmp_path: pathlib.Path, mosquitto: LocalMosquitto,
                                                         four: list[Box], blind: pathlib.Path) -> None:
    before = [box.files() for box in four]
    proc = edge_agent("fleet", "rollout", str(manifest(tmp_path, mosquitto.url, blind)), timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "line3-a" in proc.stdout and "refused" in proc.stdout and "gate REFUSED" in proc.stdout
    assert "STOPPED at the canary line3-a (refused); not asked: line3-b, line3-c, line3-d" in proc.stdout
    assert [box.files() for box in four] == before  # the canary kept its model; the others were never asked
    assert not any((box.model.parent / ".history").exists() for box in four[1:])


@pytest.mark.timeout(300)
def test_a_passing_model_reaches_every_box_and_the_rollback_restores_them(
        tmp_path: pathlib.Path, mosquitto: LocalMosquitto, four: list[Box]) -> None:
    before = [box.files() for box in four]
    path = manifest(tmp_path, mosquitto.url, DEFAULT_MODEL)
    proc = edge_agent("fleet", "rollout", str(path), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rollout complete: 4 box(es) changed" in proc.stdout
    new_sha = file_digest(DEFAULT_MODEL)
    assert [box.sha() for box in four] == [new_sha] * 4
    assert all(box.model.read_bytes() == DEFAULT_MODEL.read_bytes() for box in four)
    assert proc.stdout.count(f"detector@{new_sha[:12]}") >= 4  # each box's reply names what it runs now

    back = edge_agent("fleet", "rollback", str(path), timeout=120)
    assert back.returncode == 0, back.stdout + back.stderr
    assert "rollback complete: 4 box(es) changed" in back.stdout
    assert [box.files() for box in four] == before  # byte for byte, the gate records too

    again = edge_agent("fleet", "rollback", str(path), timeout=120)  # nothing runs the model any more
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("unchanged") == 4 and [box.files() for box in four] == before


def test_a_box_out_of_reach_stops_the_rollout_before_any_box_changes(
        tmp_path: pathlib.Path, mosquitto: LocalMosquitto, four: list[Box]) -> None:
    before = [box.files() for box in four]
    path = manifest(tmp_path, mosquitto.url, DEFAULT_MODEL, boxes=(*DEVICES, "line3-e"))
    path.write_text(path.read_text().replace("reach_s: 5", "reach_s: 2"))  # line3-e has no `fleet serve`
    proc = edge_agent("fleet", "rollout", str(path), timeout=60)
    assert_fails_cleanly(proc, "out of reach: line3-e (no start: no answer within 2 s (is `edge-agent fleet serve` "
                               "running there")
    assert "Nothing was changed on any box" in proc.stderr
    assert [box.files() for box in four] == before


@pytest.mark.timeout(240)
def test_a_box_that_goes_away_mid_rollout_is_named_and_the_rollback_restores_the_others(
        tmp_path: pathlib.Path, mosquitto: LocalMosquitto, val: pathlib.Path) -> None:
    boxes = [make_box(tmp_path / "boxes", d, mosquitto.url) for d in DEVICES]
    before = [box.files() for box in boxes]
    path = manifest(tmp_path, mosquitto.url, DEFAULT_MODEL)
    path.write_text(path.read_text().replace("reach_s: 5", "reach_s: 3"))
    with serving(boxes, mosquitto.url, val, vanish=("line3-d",)):  # line3-d answers the ping, then is gone
        proc = edge_agent("fleet", "rollout", str(path), timeout=180)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "line3-d              no start" in proc.stdout
        assert ("rollout INCOMPLETE: done on line3-a, line3-b, line3-c; not on line3-d (no start) "
                "(`edge-agent fleet rollback MANIFEST` puts the done ones back)") in proc.stdout
        assert [box.sha() for box in boxes[:3]] == [file_digest(DEFAULT_MODEL)] * 3
        assert boxes[3].files() == before[3]

        back = edge_agent("fleet", "rollback", str(path), timeout=120)
        assert back.returncode == 3, back.stdout + back.stderr  # line3-d does not answer: said, not hidden
        assert "rollback INCOMPLETE: done on line3-a, line3-b, line3-c; not on line3-d (no start)" in back.stdout
    assert [box.files() for box in boxes] == before


@pytest.mark.timeout(120)
def test_fleet_serve_as_a_process(tmp_path: pathlib.Path, mosquitto: LocalMosquitto, val: pathlib.Path) -> None:
    """`edge-agent fleet serve` as the box runs it (its config's broker and device id, the key file), a one-box
    rollout, and a clean stop on SIGTERM."""
    box = make_box(tmp_path / "boxes", "line3-a", mosquitto.url)
    path = manifest(tmp_path, mosquitto.url, DEFAULT_MODEL, boxes=("line3-a",))
    log = tmp_path / "serve.log"
    with log.open("w") as log_file:
        serve = subprocess.Popen([*EDGE_AGENT, "fleet", "serve", "--config", str(box.config), "--val", str(val),
                                  "--secret-file", str(tmp_path / "fleet.key"), "--no-reload", "--threads", "1"],
                                 stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while "listens on edge/line3-a/fleet/command" not in log.read_text():
            assert serve.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        proc = edge_agent("fleet", "rollout", str(path), timeout=90)
        assert proc.returncode == 0, proc.stdout + proc.stderr + log.read_text()
        assert "rollout complete: 1 box(es) changed" in proc.stdout and box.sha() == file_digest(DEFAULT_MODEL)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0, log.read_text()
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(timeout=10)
    assert "Traceback" not in log.read_text()


def test_fleet_serve_refuses_a_short_key(tmp_path: pathlib.Path, mosquitto: LocalMosquitto) -> None:
    box = make_box(tmp_path / "boxes", "line3-a", mosquitto.url)
    (tmp_path / "fleet.key").write_text("short\n")
    assert_fails_cleanly(edge_agent("fleet", "serve", "--config", str(box.config), "--val", str(tmp_path),
                                    "--secret-file", str(tmp_path / "fleet.key")),
                         "the key on its first line has 5 bytes; expected at least 32")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        """Silent: the test's output is the rollout's."""


def test_a_digest_mismatch_is_refused_by_the_box(tmp_path: pathlib.Path, mosquitto: LocalMosquitto,
                                                  four: list[Box]) -> None:
    """The manifest names the FP32 detector's digest, but the plant's HTTP share serves another file: the
    operator cannot check a URL, the canary does, refuses it and changes nothing."""
    share = tmp_path / "share"
    share.mkdir()
    shutil.copyfile(DEFAULT_MODEL.with_name("conveyor-yolov8n.int8.onnx"), share / "line3.onnx")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(share)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    before = [box.files() for box in four]
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/line3.onnx"
        proc = edge_agent("fleet", "rollout", str(manifest(tmp_path, mosquitto.url, DEFAULT_MODEL, source=url)),
                          timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"digest mismatch: the file at {url} has sha256 {file_digest(share / 'line3.onnx')}" in proc.stdout
    assert "STOPPED at the canary line3-a (refused)" in proc.stdout
    assert [box.files() for box in four] == before
    assert not any(p.is_file() for p in (four[0].model.parent / ".fleet").rglob("*"))  # nothing kept


def test_the_operator_checks_a_source_it_can_read(tmp_path: pathlib.Path, mosquitto: LocalMosquitto) -> None:
    path = manifest(tmp_path, mosquitto.url, DEFAULT_MODEL, sha256="ab" * 32)
    assert_fails_cleanly(edge_agent("fleet", "rollout", str(path)),
                         f"model.source {DEFAULT_MODEL} has sha256 {file_digest(DEFAULT_MODEL)}, the manifest names "
                         f"{'ab' * 32}: the boxes would refuse it; nothing was changed")


@pytest.mark.parametrize(("text", "message"), [
    # no model at all
    ("secret_file: k\nboxes: [a]\n", "model (line 1): Field required"),
    # a digest that is not 64 hex
    ("secret_file: k\nmodel: {source: m.onnx, sha256: abc}\nboxes: [a]\n",
     "model.sha256 (line 2): expected the model file's sha256, 64 hex digits"),
    # a canary that is not one of the boxes
    (f"secret_file: k\nmodel: {{source: m.onnx, sha256: {'a' * 64}}}\nboxes: [a, b]\ncanary: c\n",
     "canary 'c' is not one of boxes (a, b)"),
    # a device id that cannot be a topic segment
    (f"secret_file: k\nmodel: {{source: m.onnx, sha256: {'a' * 64}}}\nboxes: ['a/b', '+']\n",
     "boxes (line 3): 'a/b', '+': expected device ids"),
    # a box named twice
    (f"secret_file: k\nmodel: {{source: m.onnx, sha256: {'a' * 64}}}\nboxes: [a, a]\n", "named twice: a"),
    # a typo'd key
    (f"secret_file: k\nmodel: {{source: m.onnx, sha256: {'a' * 64}}}\nboxes: [a]\ncanry: a\n",
     "canry (line 4): unknown key; expected one of: broker, secret_file, model, boxes, canary"),
    # not YAML
    ("boxes: [a\n", "line 2"),
])
def test_a_malformed_manifest_is_refused_naming_the_field(tmp_path: pathlib.Path, text: str, message: str) -> None:
    path = tmp_path / "rollout.yaml"
    path.write_text(text)
    proc = edge_agent("fleet", "rollout", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"edge-agent: error: {path}: ") and message in proc.stderr, proc.stderr


def test_a_short_or_missing_key_is_refused(tmp_path: pathlib.Path, mosquitto: LocalMosquitto) -> None:
    path = manifest(tmp_path, mosquitto.url, DEFAULT_MODEL)
    (tmp_path / "fleet.key").write_text("short\n")
    assert_fails_cleanly(edge_agent("fleet", "rollout", str(path)), "the key on its first line has 5 bytes; "
                         "expected at least 32")


@pytest.mark.parametrize("example", [ex for ex in EXAMPLES if ex.kind == "fleet-manifest"], ids=str)
def test_the_manifest_examples_in_the_docs_are_valid(example: Example, tmp_path: pathlib.Path) -> None:
    (tmp_path / "rollout.yaml").write_text(example.text, encoding="utf-8")
    loaded = load_manifest(tmp_path / "rollout.yaml")
    assert loaded.canary_box in loaded.boxes and loaded.rest
