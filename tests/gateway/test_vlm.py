"""OllamaVlm, the gateway's only Ollama code, against the fake Ollama: what it sends, how it reads
the answer, and which error each of Ollama's failures becomes."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest

from agent.errors import (
    RequestRejected,
    VlmInvalidAnswer,
    VlmModelFailed,
    VlmModelMissing,
    VlmTimeout,
    VlmUnavailable,
)
from agent.gateway.config import OllamaConfig
from agent.gateway.templates import Hint, Prompt, get_template
from agent.gateway.vlm import OllamaVlm, VlmResult
from tests.escalation import samples
from tests.fakes.ollama import FakeOllama, Reply
from tests.fakes.ollama_runner import INPUT_TOO_LONG, NO_VISION, RUNNER_TERMINATED, out_of_memory

# an answer a model under the grammar can write (number bounds are not enforced) that the gateway refuses
OUT_OF_RANGE = '{"verdict": "pass", "tags": [{"label": "part", "confidence": 1.7}], "defects": [], "description": "x"}'


def prompt() -> Prompt:
    return get_template("inspect-v1").build(image=samples.jpeg(), crops=[(samples.png(), Hint("hole", 0.3, None))],
                                            detections=[], source_size=None, defect_classes=["scratch", "hole"])


def ask(fake: FakeOllama, timeout: float | None = None, **config: Any) -> VlmResult:
    async def run() -> VlmResult:
        vlm = OllamaVlm.from_config(OllamaConfig(host=fake.url, **config))
        try:
            return await vlm.ask(prompt(), timeout=timeout)
        finally:
            await vlm.aclose()
    return asyncio.run(run())


def check(fake: FakeOllama, **config: Any) -> str | None:
    async def run() -> str | None:
        vlm = OllamaVlm.from_config(OllamaConfig(host=fake.url, **config))
        try:
            return await vlm.check()
        finally:
            await vlm.aclose()
    return asyncio.run(run())


def test_the_chat_request_carries_the_schema_options_keep_alive_and_images(fake_ollama: FakeOllama) -> None:
    ask(fake_ollama, model="llava:7b", keep_alive="2h", num_ctx=8192, temperature=0.0, num_predict=256)
    (chat,) = fake_ollama.chat_requests()
    body = chat.body
    assert body["stream"] is False  # the REST default is streaming
    assert body["keep_alive"] == "2h"
    assert body["options"] == {"temperature": 0.0, "num_ctx": 8192, "num_predict": 256}
    assert body["truncate"] is False  # an overflow is an error, never a silent cut
    assert body["format"] == prompt().schema
    assert [base64.b64decode(i) for i in body["messages"][1]["images"]] == [samples.jpeg(), samples.png()]
    assert chat.headers["content-type"] == "application/json"


def test_durations_are_converted_from_nanoseconds(fake_ollama: FakeOllama) -> None:
    fake_ollama.script(Reply(metrics={"total_duration": 1_234_500_000, "load_duration": 2_000_000,
                                      "prompt_eval_count": 0, "eval_count": 77}))
    result = ask(fake_ollama)
    assert (result.vlm_ms, result.load_ms) == (1234.5, 2.0)
    assert (result.prompt_tokens, result.answer_tokens) == (0, 77)  # an omitted count (cached prompt) is 0
    assert result.attempts == 1 and result.model == "llava:7b"
    assert result.answer.defects[0].severity == "medium"


def test_an_answer_cut_off_by_num_predict_says_so(fake_ollama: FakeOllama) -> None:
    fake_ollama.script(*[Reply(content='{"verdict": "pass", "tags": [{"lab', done_reason="length")] * 2)
    with pytest.raises(VlmInvalidAnswer, match="cut off at num_predict=512"):
        ask(fake_ollama)
    assert len(fake_ollama.chat_requests()) == 2


@pytest.mark.parametrize(("reply", "error", "words"), [
    # Ollama's scheduler: the model is not pulled
    (Reply(status=404, error='model "llava:7b" not found, try pulling it first'), VlmModelMissing,
     ["ollama pull llava:7b"]),
    # OLLAMA_MAX_QUEUE exceeded
    (Reply(status=503, error="server busy, please try again.  maximum pending requests exceeded"), VlmUnavailable,
     ["Ollama is busy", "OLLAMA_MAX_QUEUE"]),
    # the model takes no images: the runner fails (/api/chat has no 400 capability check for images)
    (Reply(status=500, error=NO_VISION), VlmModelFailed, ["cannot take images", "vision model"]),
    # the model does not fit the memory
    (Reply(status=500, error=out_of_memory(5.6, 3.1)), VlmModelFailed, ["does not fit", "smaller model"]),
    # truncate: false and the prompt is longer than the context
    (Reply(status=400, error=INPUT_TOO_LONG), VlmModelFailed, ["does not fit the model's context", "num_ctx"]),
    # any other 400
    (Reply(status=400, error="illegal base64 data at input byte 0"), RequestRejected, ["illegal base64"]),
    # the runner crashed once: Ollama starts a new one
    (Reply(status=500, error=RUNNER_TERMINATED), VlmUnavailable, ["died", "loads it again"]),
    # anything else from the server
    (Reply(status=500, error="unexpected server error"), VlmUnavailable, ["HTTP 500", "unexpected"]),
])
def test_ollama_errors_become_the_matching_vlm_error(fake_ollama: FakeOllama, reply: Reply, error: type[Exception],
                                                     words: list[str]) -> None:
    fake_ollama.script(reply)
    with pytest.raises(error) as info:
        ask(fake_ollama)
    for word in words:
        assert word in str(info.value)
    assert len(fake_ollama.chat_requests()) == 1  # no retry on these


def test_connection_refused_is_unavailable(fake_ollama: FakeOllama) -> None:
    fake_ollama.down()
    with pytest.raises(VlmUnavailable, match=r"unreachable \(connection refused\)"):
        ask(fake_ollama)


def test_the_callers_deadline_cancels_the_http_request(fake_ollama: FakeOllama) -> None:
    fake_ollama.delay_s = 3.0
    start = time.monotonic()
    with pytest.raises(VlmTimeout, match=r"call's deadline \(0.30 s\)"):
        ask(fake_ollama, timeout=0.3)
    assert time.monotonic() - start < 1.5
    assert fake_ollama.wait_for_disconnect(2.0)


def test_the_request_timeout_caps_a_longer_deadline(fake_ollama: FakeOllama) -> None:
    fake_ollama.delay_s = 3.0
    with pytest.raises(VlmTimeout, match=r"ollama.timeout_s=0.3 s"):
        ask(fake_ollama, timeout=60, timeout_s=0.3)


def test_the_retry_shares_the_calls_deadline(fake_ollama: FakeOllama) -> None:
    fake_ollama.script(Reply(content=OUT_OF_RANGE, delay_s=0.4), Reply(delay_s=0.4))
    start = time.monotonic()
    with pytest.raises(VlmTimeout, match="deadline"):
        ask(fake_ollama, timeout=0.6)
    assert time.monotonic() - start < 1.0
    first, second = fake_ollama.chat_requests()
    assert first.status == 200 and fake_ollama.wait_for_disconnect(2.0) and second.disconnected


def test_check_reports_what_is_wrong(fake_ollama: FakeOllama) -> None:
    assert check(fake_ollama) is None
    assert "not pulled" in (check(fake_ollama, model="llava:13b") or "")
    assert "ollama pull llava:13b" in (check(fake_ollama, model="llava:13b") or "")
    fake_ollama.pull("llama3:8b", ["completion", "tools"])
    assert "cannot take images (capabilities: completion, tools)" in (check(fake_ollama, model="llama3:8b") or "")
    fake_ollama.down()
    assert "unreachable" in (check(fake_ollama) or "")
