"""A box's end (:class:`~agent.tooling.fleet.box.BoxServer`) without a broker: what it refuses before touching
anything (signatures, another box's command, replays, stale commands), the digest check on the fetched file, and the
escalation watch's arithmetic."""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any

import pytest

from agent.config.models import DEFAULT_MODEL, DEFAULT_PREFILTER
from agent.errors import EdgeAgentError
from agent.prefilter.model_info import file_digest
from agent.tooling.fleet import wire
from agent.tooling.fleet.box import BoxServer, BoxSettings
from agent.tooling.fleet.fetch import DigestMismatch, fetch_model
from agent.tooling.fleet.signing import SignatureError, sign, verify
from agent.tooling.fleet.watch import EscalationCount, judge_watch
from agent.tooling.promote import AgentTarget
from tests.fleet.boxes import KEY, make_box


@pytest.fixture()
def box(tmp_path: pathlib.Path) -> tuple[BoxServer, list[dict[str, Any]]]:
    made = make_box(tmp_path, "line3-a", "mqtt://127.0.0.1:1")
    settings = BoxSettings(config=made.config, val=tmp_path / "val", key=KEY, target=AgentTarget(reload=False))
    return BoxServer(settings, "line3-a", made.model), []


def handled(server: BoxServer, doc: dict[str, Any]) -> list[dict[str, Any]]:
    replies: list[dict[str, Any]] = []
    server.handle(json.dumps(doc).encode(), replies.append)
    return [verify(r, KEY) for r in replies]  # every reply is signed with the fleet key


def test_a_ping_says_what_the_box_runs(box: tuple[BoxServer, list[dict[str, Any]]]) -> None:
    server, _ = box
    [reply] = handled(server, sign(wire.command("line3-a", "ping"), KEY))
    sha = file_digest(DEFAULT_PREFILTER)
    assert (reply["state"], reply["model"]) == ("done", {"id": f"detector@{sha[:12]}", "sha256": sha})


@pytest.mark.parametrize(("change", "message"), [
    # signed with another key
    (lambda c: sign(c, b"another key, at least thirty-two bytes long"), "the signature does not match"),
    # not signed
    (lambda c: c, "the message is not signed"),
    # changed after signing (the digest swapped)
    (lambda c: {**sign(c, KEY), "sha256": "b" * 64}, "the signature does not match"),
    # for another box
    (lambda c: sign({**c, "device": "line3-b"}, KEY), "the command is for device 'line3-b', this box is 'line3-a'"),
    # issued an hour ago (a recorded command played again)
    (lambda c: sign({**c, "issued_at": time.time() - 3600}, KEY), "more than 300 s from this box's clock"),
    # an action nobody knows
    (lambda c: sign({**c, "action": "format-disk"}, KEY), "unknown action 'format-disk'"),
])
def test_a_command_that_is_not_for_us_is_refused_and_changes_nothing(
        box: tuple[BoxServer, list[dict[str, Any]]], change: Any, message: str) -> None:
    server, _ = box
    before = server.model_path.read_bytes()
    cmd = wire.command("line3-a", "promote", source=str(DEFAULT_MODEL), sha256=file_digest(DEFAULT_MODEL))
    [reply] = handled(server, change(cmd))
    assert reply["state"] == "refused" and message in reply["detail"], reply
    assert server.model_path.read_bytes() == before
    assert not (server.model_path.parent / ".fleet").exists()


def test_a_command_is_taken_once(box: tuple[BoxServer, list[dict[str, Any]]]) -> None:
    server, _ = box
    cmd = sign(wire.command("line3-a", "ping"), KEY)
    assert [r["state"] for r in handled(server, cmd)] == ["done"]
    [again] = handled(server, cmd)
    assert again["state"] == "refused" and "was seen before (a replay)" in again["detail"]


def test_a_command_s_age_counts_from_its_arrival(box: tuple[BoxServer, list[dict[str, Any]]]) -> None:
    """A command that waited in the box's queue behind a long promotion is not stale: it was fresh when it came."""
    server, _ = box
    cmd = sign({**wire.command("line3-a", "ping"), "issued_at": time.time() - 1000}, KEY)
    replies: list[dict[str, Any]] = []
    server.handle(json.dumps(cmd).encode(), replies.append, received=time.time() - 990)
    assert [r["state"] for r in replies] == ["done"]


def test_rollback_leaves_a_box_that_runs_another_model(box: tuple[BoxServer, list[dict[str, Any]]]) -> None:
    server, _ = box
    replies = handled(server, sign(wire.command("line3-a", "rollback", sha256="c" * 64), KEY))
    assert [r["state"] for r in replies] == ["started", "unchanged"]
    assert "not the rollout's model: nothing to roll back" in replies[-1]["detail"]


def test_fetch_checks_the_digest_and_keeps_nothing_on_a_mismatch(tmp_path: pathlib.Path) -> None:
    staging = tmp_path / "staging"
    good = fetch_model(str(DEFAULT_MODEL), file_digest(DEFAULT_MODEL), staging)
    assert good.read_bytes() == DEFAULT_MODEL.read_bytes()
    with pytest.raises(DigestMismatch, match=f"has sha256 {file_digest(DEFAULT_PREFILTER)}, the rollout names"):
        fetch_model(str(DEFAULT_PREFILTER), "d" * 64, staging)
    assert sorted(p.name for p in staging.iterdir()) == [good.name]


def test_fetch_names_a_source_it_cannot_read(tmp_path: pathlib.Path) -> None:
    with pytest.raises(EdgeAgentError, match=r"cannot read the model file .*missing.onnx"):
        fetch_model(str(tmp_path / "missing.onnx"), "d" * 64, tmp_path / "staging")


def test_verify_refuses_a_tampered_message() -> None:
    doc = sign({"a": 1}, KEY)
    assert verify(doc, KEY) == doc
    with pytest.raises(SignatureError):
        verify({**doc, "a": 2}, KEY)


@pytest.mark.parametrize(("before", "after", "ok", "words"), [
    # 10 of 100 escalated before, 11 of 100 after: a rise of 0.01, allowed 0.02
    ((0, 0, 100, 10), (100, 10, 200, 21), True, "escalation rate 0.100 before (100 events), 0.110 after"),
    # 10 of 100 before, 40 of 100 after: the new model is unsure far more often
    ((0, 0, 100, 10), (100, 10, 200, 50), False, "0.400 after (100 events), allowed rise 0.020"),
    # no event after the swap: nothing to judge on
    ((0, 0, 100, 10), (100, 10, 100, 10), False, "no tag event in the window after the swap"),
])
def test_the_escalation_watch(before: tuple[int, int, int, int], after: tuple[int, int, int, int], ok: bool,
                              words: str) -> None:
    b = (EscalationCount(before[0], before[1]), EscalationCount(before[2], before[3]))
    a = (EscalationCount(after[0], after[1]), EscalationCount(after[2], after[3]))
    result = judge_watch(b, a, 0.02)
    assert result.ok is ok and words in result.detail, result.detail


def test_only_the_newest_reports_are_kept(tmp_path: pathlib.Path) -> None:
    from agent.tooling.fleet.box import _prune_reports

    for i in range(4):
        (tmp_path / f"promotion-{i}").mkdir()
        os.utime(tmp_path / f"promotion-{i}", (1000 + i, 1000 + i))
    (tmp_path / "abcdef.onnx").write_bytes(b"x")  # not a report
    _prune_reports(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abcdef.onnx", "promotion-2", "promotion-3"]
