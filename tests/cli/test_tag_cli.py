"""``edge-agent tag`` as a user runs it: a real process, the shipped ONNX model, real image and video files.

The folder: synthetic conveyor stills (PNG, JPEG, BMP, TIFF, and a PNG named ``.dat`` that is found by its
content), one in a sub-folder, a short MJPG video, a text file and a corrupt JPEG. The escalation test runs
a real gateway (in this process) in front of the fake Ollama.
"""

from __future__ import annotations

import csv
import json
import pathlib
import signal
import subprocess
import threading
import time
from typing import Any

import cv2
import numpy as np
import pytest

from agent.capture.synthetic import ConveyorScene, SceneSettings, render_still
from agent.tooling.batch.items import CSV_COLUMNS, item_sort_key, record_to_row
from agent.tooling.batch.tag import EXIT_SKIPPED
from tests.cli.test_cli import EDGE_AGENT, assert_no_traceback, edge_agent
from tests.fakes.gateway import GatewayThread, gateway_config
from tests.fakes.ollama import VALID_ANSWER, FakeOllama

SIZE = SceneSettings(width=320, height=240)  # small: quick to write, decode and infer
VIDEO_FRAMES, VIDEO_STEP = 30, 5
IMAGES = ["a.png", "b.jpg", "c.bmp", "d.tiff", "e.dat", "sub/f.png", "sub/g.jpg", "sub/h.png"]
EXPECTED_ITEMS = sorted(
    [f"{{root}}/{n}" for n in IMAGES] + [f"{{root}}/clip.avi#frame={k}" for k in range(0, VIDEO_FRAMES, VIDEO_STEP)],
    key=item_sort_key)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("tag-inputs") / "photos"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(11)
    for name in IMAGES:
        image, _truth = render_still(rng, SIZE)
        ext = ".png" if name.endswith(".dat") else pathlib.Path(name).suffix
        ok, data = cv2.imencode(ext, image)
        assert ok
        (root / name).write_bytes(data.tobytes())
    scene = ConveyorScene(seed=5, settings=SIZE)
    writer = cv2.VideoWriter(str(root / "clip.avi"), cv2.VideoWriter.fourcc(*"MJPG"), 15.0,
                             (SIZE.width, SIZE.height))
    for _ in range(VIDEO_FRAMES):
        writer.write(scene.next_frame()[0])
    writer.release()
    (root / "notes.txt").write_text("not an image\n")
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(200)))  # JPEG magic, no image
    return root


def expected_items(root: pathlib.Path) -> list[str]:
    return [i.replace("{root}", str(root)) for i in EXPECTED_ITEMS]


def tag(inputs: pathlib.Path, out: pathlib.Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = edge_agent("tag", str(inputs), "--out", str(out), "--video-step", str(VIDEO_STEP), *extra)
    assert_no_traceback(proc)
    return proc


def without_latency(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "prefilter": {k: v for k, v in record["prefilter"].items() if k != "latency_ms"}}


def read_records(out: pathlib.Path) -> list[dict[str, Any]]:
    """The records of any output format, as JSON records (CSV rows as their cells), latency left out."""
    if out.suffix == ".json":
        return [without_latency(r) for r in json.loads(out.read_text())]
    if out.suffix == ".jsonl":
        return [without_latency(json.loads(line)) for line in out.read_text().splitlines()]
    with out.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    return [{c: v for c, v in zip(CSV_COLUMNS, row, strict=True) if c != "latency_ms"} for row in rows[1:]]


def as_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON records (latency left out) as the CSV output has them."""
    return [{c: v for c, v in zip(CSV_COLUMNS, record_to_row({**r, "prefilter": {**r["prefilter"], "latency_ms": 0}}),
                                  strict=True) if c != "latency_ms"} for r in records]


@pytest.fixture(scope="module")
def reference(inputs: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """An uninterrupted JSON Lines run: the records every other run is compared to."""
    out = tmp_path_factory.mktemp("reference") / "tags.jsonl"
    proc = tag(inputs, out)
    assert proc.returncode == EXIT_SKIPPED, proc.stderr
    return read_records(out)


def test_jsonl_run_tags_every_item_in_order_and_lists_bad_files(
        inputs: pathlib.Path, reference: list[dict[str, Any]], tmp_path: pathlib.Path) -> None:
    assert [r["item"] for r in reference] == expected_items(inputs)
    for r in reference:
        assert r["verdict"] in ("pass", "defect", "uncertain")
        assert r["decided_by"] == "prefilter"
        assert r["prefilter"]["model"].startswith("conveyor-yolov8n.int8@")
        assert (r["width"], r["height"]) == (SIZE.width, SIZE.height)
        expected_status = "unavailable" if r["verdict"] == "uncertain" else "not_needed"
        assert r["escalation"]["status"] == expected_status
        if r["verdict"] == "uncertain":
            assert r["escalation"]["reason"] == "batch tagging without a gateway"
        for t in r["tags"]:
            assert set(t) == {"label", "confidence", "box", "state", "source"}
    assert {r["verdict"] for r in reference} >= {"pass", "defect"}  # the model sees the scene
    # a rerun skips everything already there and prints the summary, bad files included
    out = tmp_path / "again.jsonl"
    first = tag(inputs, out)
    second = tag(inputs, out)
    assert second.returncode == EXIT_SKIPPED, second.stderr
    n = len(reference)
    assert f"done: {n} items in the output (0 tagged now, {n} already there)" in second.stderr
    for proc in (first, second):  # skipped files make the exit code 3, so a script can tell
        assert proc.returncode == EXIT_SKIPPED, proc.stderr
        assert "skipped 2 file(s):" in proc.stderr
        assert f"2 input(s) skipped (listed above); exit code {EXIT_SKIPPED}" in proc.stderr
        assert f"{inputs}/notes.txt: not an image" in proc.stderr
        assert f"{inputs}/sub/broken.jpg: unreadable" in proc.stderr
    assert f"done: {n} items in the output ({n} tagged now, 0 already there)" in first.stderr
    assert "time per image:" in first.stderr and "verdicts: " in first.stderr and "escalation: " in first.stderr
    assert f"tag: {n}/{n} items" in first.stderr
    assert read_records(out) == reference


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_csv_and_json_hold_the_same_records(
        inputs: pathlib.Path, reference: list[dict[str, Any]], tmp_path: pathlib.Path, suffix: str) -> None:
    out = tmp_path / f"tags{suffix}"
    proc = tag(inputs, out)
    assert proc.returncode == EXIT_SKIPPED, proc.stderr
    expected = as_rows(reference) if suffix == ".csv" else reference
    assert read_records(out) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no work file left behind


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_rerun_after_sigint_completes_without_redoing_or_losing_items(
        inputs: pathlib.Path, reference: list[dict[str, Any]], tmp_path: pathlib.Path, suffix: str) -> None:
    out = tmp_path / f"tags{suffix}"
    written = out if suffix != ".json" else tmp_path / f"tags{suffix}.partial.jsonl"
    header = 1 if suffix == ".csv" else 0
    proc = subprocess.Popen([*EDGE_AGENT, "tag", str(inputs), "--out", str(out), "--video-step", str(VIDEO_STEP),
                             "--throttle", "0.25"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
            written.exists() and len(written.read_text().splitlines()) - header >= 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == 130, stderr
    assert "interrupted: " in stderr and "run the same command again" in stderr
    done_first = len(written.read_text().splitlines()) - header
    assert 4 <= done_first < len(reference)
    if suffix == ".json":
        assert not out.exists()  # written once, at the end

    rerun = tag(inputs, out)
    assert rerun.returncode == EXIT_SKIPPED, rerun.stderr
    n = len(reference)
    assert f"done: {n} items in the output ({n - done_first} tagged now, {done_first} already there)" in rerun.stderr
    expected = as_rows(reference) if suffix == ".csv" else reference
    assert read_records(out) == expected
    assert not (tmp_path / f"tags{suffix}.partial.jsonl").exists()


def test_redo_tags_everything_again(inputs: pathlib.Path, reference: list[dict[str, Any]],
                                    tmp_path: pathlib.Path) -> None:
    out = tmp_path / "tags.jsonl"
    assert tag(inputs, out).returncode == EXIT_SKIPPED
    proc = tag(inputs, out, "--redo")
    assert proc.returncode == EXIT_SKIPPED, proc.stderr
    n = len(reference)
    assert f"({n} tagged now, 0 already there)" in proc.stderr
    assert read_records(out) == reference


@pytest.mark.parametrize(("name", "content", "args", "message"), [
    # a CSV output, JSON Lines asked for
    ("tags.csv", ",".join(CSV_COLUMNS) + "\r\n", ["--format", "jsonl"],
     "exists and holds csv records, but jsonl was asked for"),
    # a JSON Lines output named .json
    ("tags.json", '{"item": "x.png"}\n', [], "exists and holds jsonl records, but json was asked for"),
    # a file that is no tag output at all
    ("tags.jsonl", "some notes\n", [], "exists and is not a tag output"),
    # a suffix that names no format
    ("tags.txt", None, [], "cannot tell the format from the suffix '.txt'"),
])
def test_output_of_another_format_is_refused_and_nothing_is_written(
        inputs: pathlib.Path, tmp_path: pathlib.Path, name: str, content: str | None, args: list[str],
        message: str) -> None:
    out = tmp_path / name
    if content is not None:
        out.write_bytes(content.encode())
    proc = tag(inputs, out, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.startswith("edge-agent: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if content is not None else [])
    if content is not None:
        assert out.read_bytes() == content.encode()


def test_missing_path_is_refused_before_anything_runs(inputs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "tags.jsonl"
    proc = edge_agent("tag", str(inputs), str(tmp_path / "nope"), "--out", str(out))
    assert_no_traceback(proc)
    assert proc.returncode == 2
    assert f"no such file or folder: {tmp_path / 'nope'}" in proc.stderr
    assert not out.exists()


def test_uncertain_items_are_escalated_through_the_gateway(
        inputs: pathlib.Path, reference: list[dict[str, Any]], tmp_path: pathlib.Path) -> None:
    """With ``escalation.gateway`` in the config, every uncertain item (and only those) is sent to a real gateway
    in front of the fake Ollama, and its record is the merged event: the VLM's verdict, tags and status."""
    with FakeOllama() as fake:
        gateway = GatewayThread(gateway_config(fake.url)).start()
        try:
            config = tmp_path / "agent.yaml"
            config.write_text(f"escalation:\n  gateway: {gateway.address}\n")
            out = tmp_path / "tags.jsonl"
            proc = tag(inputs, out, "--config", str(config))
            chats = [r for r in fake.chat_requests() if r.body.get("messages")]
        finally:
            gateway.stop(grace=0)
    assert proc.returncode == EXIT_SKIPPED, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    uncertain = {r["item"] for r in reference if r["verdict"] == "uncertain"}
    assert uncertain, "the reference run has no uncertain item to escalate"
    assert len(chats) == len(uncertain)
    assert [r["item"] for r in records] == [r["item"] for r in reference]
    for record, before in zip(records, reference, strict=True):
        if record["item"] not in uncertain:
            assert without_latency(record) == before  # decided by the prefilter, never sent
            continue
        assert (record["verdict"], record["decided_by"]) == (VALID_ANSWER["verdict"], "vlm")
        assert record["escalation"]["status"] == "answered"
        assert record["escalation"]["model"] == "llava:7b"
        assert record["escalation"]["description"] == VALID_ANSWER["description"]
        assert record["escalation"]["defects"] == VALID_ANSWER["defects"]
        vlm = sorted((t["label"], t["confidence"]) for t in record["tags"] if t["source"] == "vlm")
        assert vlm == sorted((t["label"], t["confidence"]) for t in VALID_ANSWER["tags"])
    n = len(reference)
    assert f"escalation: {len(uncertain)} of {n} items" in proc.stderr
    assert f"answered {len(uncertain)}" in proc.stderr


class _Concurrency:
    """An ``answer_fn`` for the fake Ollama that holds each chat ``delay_s`` seconds and counts how many it holds
    at once."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.active = self.peak = self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, _body: dict[str, Any]) -> None:
        with self._lock:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
        time.sleep(self.delay_s)
        with self._lock:
            self.active -= 1


WIDE_BAND = "triage:\n  accept: 1.0\n  reject: 0.01\n"
"""Every detection uncertain: most items are escalated."""


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the measured latencies."""
    return {**without_latency(record), "escalation": {k: v for k, v in record["escalation"].items()
                                                      if k != "latency_ms"}}


def test_escalations_run_concurrently_and_records_stay_in_item_order(
        inputs: pathlib.Path, reference: list[dict[str, Any]], tmp_path: pathlib.Path) -> None:
    """With ``escalation.max_in_flight: 4``, uncertain items' calls overlap at the (slow) fake Ollama, never more
    than four at once, and the records are the same, in the same item order, as one call at a time gives."""
    records: dict[int, list[dict[str, Any]]] = {}
    peaks: dict[int, int] = {}
    for in_flight in (1, 4):
        watch = _Concurrency(0.3)
        with FakeOllama(parallel=8, answer_fn=watch) as fake:
            gateway = GatewayThread(gateway_config(fake.url, limits={"parallel": 8})).start()
            try:
                config = tmp_path / "agent.yaml"
                config.write_text(f"{WIDE_BAND}escalation:\n  gateway: {gateway.address}\n"
                                  f"  max_in_flight: {in_flight}\n")
                out = tmp_path / f"tags-{in_flight}.jsonl"
                proc = tag(inputs, out, "--config", str(config))
            finally:
                gateway.stop(grace=0)
        assert proc.returncode == EXIT_SKIPPED, proc.stderr
        records[in_flight] = read_records(out)
        assert watch.calls == sum(r["escalation"]["status"] == "answered" for r in records[in_flight]) >= 4
        peaks[in_flight] = watch.peak
    assert peaks[1] == 1
    assert 2 <= peaks[4] <= 4
    assert [r["item"] for r in records[4]] == [r["item"] for r in reference]
    assert [comparable(r) for r in records[4]] == [comparable(r) for r in records[1]]


def test_rerun_after_sigint_with_calls_in_flight_gives_the_same_records(
        inputs: pathlib.Path, reference: list[dict[str, Any]], tmp_path: pathlib.Path) -> None:
    """SIGINT while escalations are in flight: the calls are cancelled, the output is an item-order prefix (no
    item written twice, none after a cancelled one), and the rerun completes it to what one run gives."""
    watch = _Concurrency(1.0)
    with FakeOllama(parallel=8, answer_fn=watch) as fake:
        gateway = GatewayThread(gateway_config(fake.url, limits={"parallel": 8})).start()
        try:
            config = tmp_path / "agent.yaml"
            config.write_text(f"{WIDE_BAND}escalation:\n  gateway: {gateway.address}\n  max_in_flight: 4\n")
            whole = tmp_path / "whole.jsonl"
            assert tag(inputs, whole, "--config", str(config)).returncode == EXIT_SKIPPED
            out = tmp_path / "tags.jsonl"
            proc = subprocess.Popen([*EDGE_AGENT, "tag", str(inputs), "--out", str(out), "--video-step",
                                     str(VIDEO_STEP), "--config", str(config)],
                                    stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                    out.exists() and len(out.read_text().splitlines()) >= 2 and watch.active >= 2):
                time.sleep(0.02)
            assert watch.active >= 2  # calls in flight when interrupted
            proc.send_signal(signal.SIGINT)
            _stdout, stderr = proc.communicate(timeout=30)
            assert "Traceback" not in stderr, stderr
            assert proc.returncode == 130, stderr
            first = read_records(out)
            expected = [comparable(r) for r in read_records(whole)]
            assert [comparable(r) for r in first] == expected[:len(first)]
            assert 2 <= len(first) < len(expected)
            rerun = tag(inputs, out, "--config", str(config))
        finally:
            gateway.stop(grace=0)
    assert rerun.returncode == EXIT_SKIPPED, rerun.stderr
    n = len(reference)
    assert f"({n - len(first)} tagged now, {len(first)} already there)" in rerun.stderr
    assert [comparable(r) for r in read_records(out)] == expected


def test_progress_text_has_done_total_percent_rate_and_eta() -> None:
    from agent.tooling.batch.tag import progress_text
    assert progress_text(12, 40, 12, 1.5, bar=10) == "tag: 12/40 items [###-------], 30%, 8.0 items/s, ETA 0:04"
    assert progress_text(12, 40, 0, 1.5) == "tag: 12/40 items, 30%, 0.0 items/s, ETA -"
    assert progress_text(40, 40, 30, 3725.0) == "tag: 40/40 items, 100%, 0.0 items/s, in 1:02:05"
    assert progress_text(5, 3, 5, 1.0).startswith("tag: 5/5 items, 100%")  # a video longer than its estimate
