"""``edge-agent outbox``: show, export, requeue and purge dead letters of a real outbox file."""

from __future__ import annotations

import json
import pathlib

import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.publish.outbox import Outbox


@pytest.fixture
def outbox_file(tmp_path: pathlib.Path) -> pathlib.Path:
    """3 pending events; 2 dead letters refused by an ACL, 1 too large (a JPEG)."""
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path)
    for i in range(6):
        box.append(f"e{i}", "cam1", "edge/dev/cam1/tags", json.dumps({"event_id": f"e{i}", "n": i}).encode())
    jpeg = box.append("e9/snapshot", "cam1", "edge/dev/cam1/snapshot", b"\xff\xd8" + b"\0" * 500)
    box.dead_letter([1, 2], "refused 0x87", "the broker refused it 3 time(s): Not authorized (PUBACK reason code "
                    "0x87)", 3)
    box.dead_letter([jpeg], "too_large", "a message of 578 bytes is larger than the broker's maximum packet size "
                    "of 400 bytes", 0)
    box.delete([3])  # acknowledged
    box.close()
    return path


def invoke(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["outbox", *args], input=input)
    return result.exit_code, result.stdout, result.stderr


def test_show_counts_pending_and_dead_letters_per_cause(outbox_file: pathlib.Path) -> None:
    code, out, _ = invoke("show", "--file", str(outbox_file))
    assert code == 0, out
    assert "pending: 3 message(s)" in out
    assert "dead letters [refused 0x87]: 2 message(s)" in out and "Not authorized" in out
    assert "dead letters [too_large]: 1 message(s), 502 bytes" in out and "maximum packet size of 400" in out
    code, out, _ = invoke("show", "--file", str(outbox_file), "--json")
    doc = json.loads(out)
    assert doc["pending"] == 3 and [c["count"] for c in doc["dead"]] == [2, 1]


def test_export_writes_json_lines_with_the_payload(outbox_file: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out_file = tmp_path / "dead.jsonl"
    code, _, err = invoke("export", "--file", str(outbox_file), "--out", str(out_file))
    assert code == 0 and "exported 3 dead letter(s)" in err
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["event_id"] for r in rows] == ["e0", "e1", "e9/snapshot"]
    assert rows[0]["payload"] == {"event_id": "e0", "n": 0} and rows[0]["tries"] == 3
    assert rows[2]["payload_base64"].startswith("/9gA") and rows[2]["cause"] == "too_large"
    code, out, _ = invoke("export", "--file", str(outbox_file), "--cause", "too_large")
    assert code == 0 and len(out.splitlines()) == 1


def test_requeue_puts_them_back_at_the_end_in_their_order(outbox_file: pathlib.Path) -> None:
    code, out, _ = invoke("requeue", "--file", str(outbox_file), "--cause", "refused 0x87")
    assert code == 0 and "requeued 2 dead letter(s)" in out
    box = Outbox(outbox_file)
    try:
        ids = [r.event_id for r in box.next_rows(0, 10)]
        assert ids == ["e3", "e4", "e5", "e0", "e1"]  # e2 was acknowledged; e0, e1 after what was pending
        assert box.stats().dead_by_cause == (("too_large", 1),)
    finally:
        box.close()


def test_purge_asks_first_and_deletes_only_on_yes(outbox_file: pathlib.Path) -> None:
    code, out, _ = invoke("purge", "--file", str(outbox_file), input="n\n")
    assert code == 1 and "delete 3 dead letter(s)" in out and "nothing deleted" in out
    code, out, _ = invoke("purge", "--file", str(outbox_file), "--cause", "too_large", input="y\n")
    assert code == 0 and "deleted 1 dead letter(s)" in out
    code, out, _ = invoke("purge", "--file", str(outbox_file), "--yes")
    assert code == 0 and "deleted 2 dead letter(s)" in out
    code, out, _ = invoke("purge", "--file", str(outbox_file), "--yes")
    assert code == 0 and "nothing to purge" in out


def test_a_missing_file_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    code, _, err = invoke("show", "--file", str(tmp_path / "nope.sqlite"))
    assert code == 2 and "no such outbox file" in err and "Traceback" not in err


def test_the_config_names_the_outbox_default_under_the_state_directory(
        outbox_file: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(json.dumps({"device_id": "box1", "cameras": [{"id": "c", "source": "synthetic://conveyor"}]}))
    monkeypatch.setenv("STATE_DIRECTORY", str(outbox_file.parent))  # systemd's StateDirectory=: the default path
    code, out, _ = invoke("show", "--config", str(config))
    assert code == 0 and f"outbox {outbox_file}" in out and "pending: 3 message(s)" in out, out
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "elsewhere"))
    code, _, err = invoke("show", "--config", str(config))
    assert code == 2 and "does not exist" in err and "--file" in err
