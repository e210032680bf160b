"""The fake Ollama's model side (:mod:`tests.fakes.ollama_runner`): one test per behaviour it copies
from Ollama's source (load, keep_alive, /api/ps, context accounting, runner errors, format grammar),
checked through the real ``ollama`` client or raw HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest

from tests.fakes.ollama import VALID_ANSWER, FakeOllama, Reply
from tests.fakes.ollama_runner import (
    INPUT_TOO_LONG,
    NO_VISION,
    enforced_schema,
    fit_messages,
    format_problem,
    out_of_memory,
)

JPEG = b"\xff\xd8\xff\xe0fake-jpeg"


def user(text: str = "Is this part good?", images: int = 1) -> dict[str, Any]:
    return {"role": "user", "content": text, "images": [JPEG] * images}


@pytest.fixture
def client(fake_ollama: FakeOllama) -> Iterator[ollama.Client]:
    with ollama.Client(host=fake_ollama.url, timeout=10) as client:
        yield client


# -- load -------------------------------------------------------------------------------------------


def test_a_cold_load_takes_load_s_once(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    fake_ollama.load_s = 0.4
    start = time.monotonic()
    first = client.chat(model="llava:7b", messages=[user()])
    assert time.monotonic() - start >= 0.4 and (first.load_duration or 0) >= 400_000_000
    second = client.chat(model="llava:7b", messages=[user()])
    assert second.load_duration is None  # already loaded: zero, omitted
    assert fake_ollama.model("llava:7b").loads == 1


def test_a_load_is_aborted_when_its_client_disconnects(fake_ollama: FakeOllama) -> None:
    fake_ollama.load_s = 1.0
    with pytest.raises(httpx.TimeoutException), ollama.Client(host=fake_ollama.url, timeout=0.3) as impatient:
        impatient.chat(model="llava:7b", messages=[user()])
    assert fake_ollama.wait_for_disconnect(3.0)
    state = fake_ollama.model("llava:7b")
    assert state.aborted_loads == 1 and state.loads == 0 and not state.is_loaded(time.monotonic())


def test_other_requests_wait_for_a_load_in_progress() -> None:
    with FakeOllama(parallel=2, load_s=0.5) as fake, ollama.Client(host=fake.url, timeout=10) as client:
        preload = threading.Thread(target=lambda: httpx.post(f"{fake.url}/api/chat", timeout=5,
                                                             json={"model": "llava:7b", "messages": []}))
        preload.start()
        end = time.monotonic() + 5
        while not fake.model("llava:7b").loading and time.monotonic() < end:
            time.sleep(0.01)
        reply = client.chat(model="llava:7b", messages=[user()])
        preload.join(5)
        assert (reply.load_duration or 0) >= 200_000_000  # it waited for the rest of that load (Ollama's
        assert fake.model("llava:7b").loads == 1  # load_duration counts the wait), and no second load ran


def test_keep_alive_expiry_unloads_the_model(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    client.chat(model="llava:7b", messages=[user()], keep_alive="1s")
    assert [m.model for m in client.ps().models] == ["llava:7b"]
    time.sleep(1.1)
    assert client.ps().models == []
    fake_ollama.load_s = 0.2
    assert (client.chat(model="llava:7b", messages=[user()]).load_duration or 0) >= 200_000_000  # cold again


def test_ps_lists_a_loading_model_too(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    fake_ollama.load_s = 1.0
    loading = threading.Thread(target=lambda: httpx.post(f"{fake_ollama.url}/api/chat", timeout=5,
                                                         json={"model": "llava:7b", "messages": []}))
    loading.start()
    end = time.monotonic() + 5
    while not fake_ollama.model("llava:7b").loading and time.monotonic() < end:
        time.sleep(0.01)
    (listed,) = client.ps().models  # Ollama lists a runner from the start of its load
    assert listed.model == "llava:7b" and listed.expires_at is not None
    loading.join(5)
    assert fake_ollama.model("llava:7b").loads == 1


@pytest.mark.parametrize(("path", "body"), [
    ("/api/chat", {"model": "llava:7b", "messages": []}),  # chat with no messages
    ("/api/generate", {"model": "llava:7b"}),  # generate with no prompt
])
def test_a_preload_loads_without_answering(fake_ollama: FakeOllama, path: str, body: dict[str, Any]) -> None:
    fake_ollama.load_s = 0.2
    loaded = httpx.post(f"{fake_ollama.url}{path}", json={**body, "stream": False, "keep_alive": -1}, timeout=5)
    doc = loaded.json()
    assert loaded.status_code == 200 and doc["done_reason"] == "load" and "total_duration" not in doc
    assert fake_ollama.model("llava:7b").loaded_until == float("inf")  # keep_alive < 0: for ever
    unloaded = httpx.post(f"{fake_ollama.url}{path}", json={**body, "stream": False, "keep_alive": 0}, timeout=5)
    assert unloaded.json()["done_reason"] == "unload"
    assert not fake_ollama.model("llava:7b").is_loaded(time.monotonic())


def test_a_restart_unloads_every_model(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    client.chat(model="llava:7b", messages=[user()])
    fake_ollama.restart()
    assert client.ps().models == []


def test_a_load_that_does_not_fit_memory_is_500(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    fake_ollama.load_failure = out_of_memory(5.6, 3.1)
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="llava:7b", messages=[user()])
    assert info.value.status_code == 500
    assert info.value.error == "model requires more system memory (5.6 GiB) than is available (3.1 GiB)"


def test_a_dead_runner_is_500_and_unloads(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    client.chat(model="llava:7b", messages=[user()])
    fake_ollama.crash_runner()
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="llava:7b", messages=[user()])
    assert info.value.status_code == 500 and "llama runner process has terminated" in info.value.error
    assert client.ps().models == []
    assert client.chat(model="llava:7b", messages=[user()]).done  # the next request starts a new runner


def test_images_to_a_model_without_vision_fail_in_the_runner(fake_ollama: FakeOllama,
                                                             client: ollama.Client) -> None:
    fake_ollama.pull("llama3:8b", ["completion", "tools"])
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="llama3:8b", messages=[user()])
    assert (info.value.status_code, info.value.error) == (500, NO_VISION)  # no 400 "does not support"
    assert client.chat(model="llama3:8b", messages=[user(images=0)]).done  # text alone is fine


# -- context ----------------------------------------------------------------------------------------


def test_each_image_costs_768_tokens(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    one = client.chat(model="llava:7b", messages=[user(images=1)]).prompt_eval_count or 0
    three = client.chat(model="llava:7b", messages=[user(images=3)]).prompt_eval_count or 0
    assert three - one == 2 * 768


@pytest.mark.parametrize(("options", "modelfile", "trained", "expected"), [
    ({}, None, 32_768, 4096),  # OLLAMA_CONTEXT_LENGTH's default
    ({}, 2048, 32_768, 2048),  # the Modelfile's PARAMETER num_ctx
    ({"num_ctx": 8192}, 2048, 32_768, 8192),  # the request's option wins
    ({"num_ctx": 8192}, None, 4096, 4096),  # capped at the trained length
])
def test_the_context_length(fake_ollama: FakeOllama, client: ollama.Client, options: dict[str, int],
                            modelfile: int | None, trained: int, expected: int) -> None:
    fake_ollama.pull("llava:7b", num_ctx=modelfile, context_length=trained)
    client.chat(model="llava:7b", messages=[user(images=0)], options=options)
    fitted = fake_ollama.chat_requests()[-1].fitted
    assert fitted is not None and fitted.num_ctx == expected


def test_the_oldest_messages_are_dropped_and_the_images_with_them(fake_ollama: FakeOllama,
                                                                 client: ollama.Client) -> None:
    # the gateway's retry with 3 crops: system, user (4 images), assistant, user: 4 * 768 + ~1100 > 4096
    messages = [{"role": "system", "content": "You inspect parts."}, user("x" * 3600, images=4),
                {"role": "assistant", "content": "{}" * 200}, {"role": "user", "content": "Answer again."}]
    client.chat(model="llava:7b", messages=messages)
    fitted = fake_ollama.chat_requests()[-1].fitted
    assert fitted is not None and fitted.dropped_messages == 1 and fitted.images_seen == 0
    assert [m["role"] for m in fitted.messages] == ["system", "assistant", "user"]  # the system message stays


def test_a_last_message_over_the_context_is_cut(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    reply = client.chat(model="llava:7b", messages=[user("x" * 2000, images=5)])  # 5 * 768 + 504 > 4096
    fitted = fake_ollama.chat_requests()[-1].fitted
    assert reply.prompt_eval_count == 4096 and fitted is not None and fitted.truncated
    assert fitted.images_seen == 4  # the first image went with the cut


def test_truncate_false_makes_an_overflow_an_error(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    response = httpx.post(f"{fake_ollama.url}/api/chat", timeout=5, json={
        "model": "llava:7b", "stream": False, "truncate": False,
        "messages": [{"role": "user", "content": "x", "images": ["/9j/4A=="] * 6}]})
    assert (response.status_code, response.json()) == (400, {"error": INPUT_TOO_LONG})
    assert fit_messages([user(images=5)], 4096, truncate=False) != INPUT_TOO_LONG  # 5 images fit


# -- format ----------------------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["pass", "defect"]},
                   "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                   "count": {"type": "integer", "maximum": 3},
                   "note": {"type": "string", "maxLength": 5, "description": "skipped"}},
    "required": ["verdict"],
}


@pytest.mark.parametrize(("content", "done_reason", "refused"), [
    ('{"verdict": "pass"}', "stop", ""),  # fits
    ('{"verdict": "maybe"}', "stop", "'maybe' is not one of"),  # enum: enforced
    ('{"verdict": "pass", "confidence": 1.7}', "stop", ""),  # number bounds: skipped by the grammar
    ('{"verdict": "pass", "count": 7}', "stop", "greater than the maximum"),  # integer bounds: enforced
    ('{"verdict": "pass", "note": "far too long"}', "stop", "is too long"),  # maxLength: enforced
    ('{"verdict": "pass", "extra": 1}', "stop", "Additional properties"),  # additionalProperties: false
    ("Sure! It looks fine.", "stop", "not JSON"),  # no prose under a grammar
    ('{"verdict": "pa', "length", ""),  # cut off by num_predict: any prefix
])
def test_format_is_a_grammar_on_the_answer(content: str, done_reason: str, refused: str) -> None:
    problem = format_problem(SCHEMA, content, done_reason)
    assert (refused in problem and problem) if refused else problem == ""
    assert "description" not in enforced_schema(SCHEMA)["properties"]["note"]


def test_an_answer_no_model_could_write_is_refused(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    fake_ollama.script('{"verdict": "maybe"}', json.dumps(VALID_ANSWER))
    with pytest.raises(ollama.ResponseError, match="could not have written"):
        client.chat(model="llava:7b", messages=[user()], format=SCHEMA)
    assert fake_ollama.unfaithful and "maybe" in fake_ollama.unfaithful[0]
    assert client.chat(model="llava:7b", messages=[user()], format="json").done  # "json": any JSON


def test_generate_answers_in_response(fake_ollama: FakeOllama) -> None:
    fake_ollama.script(Reply(content='{"verdict": "pass"}'))
    doc = httpx.post(f"{fake_ollama.url}/api/generate", timeout=5, json={
        "model": "llava:7b", "prompt": "Is it good?", "images": ["/9j/4A=="], "stream": False}).json()
    assert doc["response"] == '{"verdict": "pass"}' and doc["done_reason"] == "stop" and doc["prompt_eval_count"]
