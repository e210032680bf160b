"""The fake Ollama checked against the real ``ollama`` client's parsing (and raw HTTP where the
client hides the wire), so that what the gateway is tested against is what Ollama sends."""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import ollama
import pytest

from tests.fakes.ollama import BUSY_MESSAGE, GARBAGE, VALID_ANSWER, FakeOllama, Reply
from tests.fakes.service_time import ServiceTime

USER = [{"role": "user", "content": "Is this part good?", "images": [b"\xff\xd8\xff\xe0fake-jpeg"]}]


@pytest.fixture
def client(fake_ollama: FakeOllama) -> Iterator[ollama.Client]:
    with ollama.Client(host=fake_ollama.url, timeout=10) as client:
        yield client


def test_chat_non_streaming(client: ollama.Client, fake_ollama: FakeOllama) -> None:
    reply = client.chat(model="llava:7b", messages=USER, format={"type": "object"}, options={"temperature": 0.1},
                        keep_alive="10m")
    assert json.loads(reply.message.content or "") == VALID_ANSWER
    assert reply.message.role == "assistant" and reply.done and reply.done_reason == "stop"
    # prompt tokens: 4 per message + ceil(18 bytes / 4) = 5 for the text + 768 for the image
    assert reply.model == "llava:7b" and (reply.prompt_eval_count, reply.eval_count) == (777, 48)
    # durations in nanoseconds, and consistent: total covers the parts
    assert reply.total_duration and reply.eval_duration and reply.prompt_eval_duration
    assert reply.eval_duration + reply.prompt_eval_duration <= reply.total_duration
    assert reply.created_at and reply.created_at.endswith("Z")
    datetime.datetime.fromisoformat(reply.created_at[:26])  # RFC 3339 with nanoseconds
    (chat,) = fake_ollama.chat_requests()
    assert chat.body["stream"] is False and chat.body["keep_alive"] == "10m"
    assert chat.body["messages"][0]["images"] == ["/9j/4GZha2UtanBlZw=="]  # bare base64 of the bytes


def test_chat_streaming(client: ollama.Client) -> None:
    parts = list(client.chat(model="llava:7b", messages=USER, stream=True))
    assert len(parts) > 2 and not any(p.done for p in parts[:-1])
    assert json.loads("".join(p.message.content or "" for p in parts)) == VALID_ANSWER
    last = parts[-1]
    assert last.done and last.done_reason == "stop" and last.message.content == "" and last.total_duration


def test_the_rest_default_is_streaming_ndjson(fake_ollama: FakeOllama) -> None:
    response = httpx.post(f"{fake_ollama.url}/api/chat",
                          json={"model": "llava:7b", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[-1]["done"] is True and all(line["done"] is False for line in lines[:-1])


def test_async_client_and_garbage_answers(fake_ollama: FakeOllama) -> None:
    fake_ollama.script(GARBAGE)

    async def run() -> str:
        client = ollama.AsyncClient(host=fake_ollama.url, timeout=10)
        try:
            reply = await client.chat(model="llava:7b", messages=USER)
            return reply.message.content or ""
        finally:
            await client.close()

    assert asyncio.run(run()) == GARBAGE


def test_a_mid_stream_error_raises_with_status_minus_one(client: ollama.Client, fake_ollama: FakeOllama) -> None:
    fake_ollama.script(Reply(error="an error was encountered while running the model"))
    stream = client.chat(model="llava:7b", messages=USER, stream=True)
    first = next(stream)
    assert first.done is False
    with pytest.raises(ollama.ResponseError) as info:
        next(stream)
    assert info.value.status_code == -1 and "while running the model" in info.value.error


def test_list_show_ps_and_version(client: ollama.Client, fake_ollama: FakeOllama) -> None:
    assert [m.model for m in client.list().models] == ["llava:7b"]
    shown = client.show("llava:7b")
    assert shown.capabilities == ["completion", "vision"] and shown.details and shown.details.family == "llama"
    assert shown.modelinfo and "general.architecture" in shown.modelinfo
    assert client.ps().models == []  # nothing loaded yet
    client.chat(model="llava:7b", messages=USER, keep_alive="30m")
    (loaded,) = client.ps().models
    assert loaded.model == "llava:7b" and loaded.expires_at is not None and loaded.context_length == 4096
    left = loaded.expires_at - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(minutes=29) < left <= datetime.timedelta(minutes=30)
    assert httpx.get(f"{fake_ollama.url}/api/version").json() == {"version": "0.14.0"}


def test_load_and_unload_replies_carry_no_metrics(fake_ollama: FakeOllama) -> None:
    loaded = httpx.post(f"{fake_ollama.url}/api/chat", json={"model": "llava:7b", "messages": [], "stream": False})
    assert loaded.json()["done_reason"] == "load" and "total_duration" not in loaded.json()  # omitempty
    unloaded = httpx.post(f"{fake_ollama.url}/api/chat",
                          json={"model": "llava:7b", "messages": [], "keep_alive": 0, "stream": False})
    assert unloaded.json()["done_reason"] == "unload"


def test_a_model_that_is_not_pulled_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as chat:
        client.chat(model="llava:13b", messages=USER)
    assert chat.value.status_code == 404
    assert chat.value.error == 'model "llava:13b" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError, match='model "llava" not found'):  # no tag means :latest
        client.chat(model="llava", messages=USER)
    with pytest.raises(ollama.ResponseError) as show:
        client.show("llava:13b")
    assert (show.value.status_code, show.value.error) == (404, "model 'llava:13b' not found")


@pytest.mark.parametrize(("body", "message"), [
    (b"", "missing request body"),  # no body
    (b"{not json", "invalid character"),  # bad JSON
    (b'{"messages": []}', "model is required"),  # no model
    (b'{"model": "llava:7b", "format": "xml"}', "invalid format"),  # format neither "json" nor a schema
    (b'{"model": "llava:7b", "keep_alive": "soon"}', 'invalid duration "soon"'),
    (json.dumps({"model": "llava:7b", "messages": [{"role": "user", "content": "x",
                                                    "images": ["data:image/jpeg;base64,AAAA"]}]}).encode(),
     "illegal base64 data"),  # a data URI is not bare base64
])
def test_bad_requests_are_400_with_an_error_body(fake_ollama: FakeOllama, body: bytes, message: str) -> None:
    response = httpx.post(f"{fake_ollama.url}/api/chat", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.headers["content-type"].startswith("application/json")
    assert message in response.json()["error"]
    # and the client turns it into a ResponseError with the status
    error = ollama.ResponseError(response.text, response.status_code)
    assert error.status_code == 400 and message in error.error


def test_a_full_queue_is_503(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    fake_ollama.delay_s, fake_ollama.max_queue = 0.5, 0
    first = threading.Thread(target=client.chat, kwargs={"model": "llava:7b", "messages": USER})
    first.start()
    try:
        while not fake_ollama.chat_requests():
            pass
        with pytest.raises(ollama.ResponseError) as info, ollama.Client(host=fake_ollama.url, timeout=10) as other:
            other.chat(model="llava:7b", messages=USER)
        assert (info.value.status_code, info.value.error) == (503, BUSY_MESSAGE)
    finally:
        first.join(5)


def test_connection_refused_and_unknown_paths(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    response = httpx.get(f"{fake_ollama.url}/api/nothing")
    assert (response.status_code, response.text) == (404, "404 page not found")
    assert httpx.get(f"{fake_ollama.url}/").text == "Ollama is running"
    fake_ollama.down()
    with pytest.raises(ConnectionError, match="Failed to connect to Ollama"):
        client.list()
    fake_ollama.up()
    assert client.list().models


def test_answer_fn_and_the_record(fake_ollama: FakeOllama, client: ollama.Client) -> None:
    fake_ollama.answer_fn = lambda body: json.dumps({"echo": body["options"]["num_ctx"]})
    reply = client.chat(model="llava:7b", messages=USER, options={"num_ctx": 4096})
    assert json.loads(reply.message.content or "") == {"echo": 4096}
    assert [r.path for r in fake_ollama.requests] == ["/api/chat"]


def _serve_truth(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.ollama", "--stop-on-eof", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on "), (line, proc.stderr.read() if proc.stderr else "")
    return proc, line.split()[-1]


@pytest.mark.parametrize("error_rate", [0.0, 1.0])
def test_as_a_process_it_answers_about_a_synthetic_cameras_frames_from_their_truth(error_rate: float) -> None:
    """``python -m tests.fakes.ollama --truth-scene surface --truth-seed 4``: the simulated VLM for trying the
    gateway and learn mode by hand. It knows the frames of ``synthetic://surface?seed=4``; error rate 0: every
    verdict is the truth's; 1: every verdict is wrong."""
    import cv2

    from agent.capture.scenes import get_scene

    proc, url = _serve_truth("--truth-scene", "surface", "--truth-seed", "4", "--truth-frames", "6",
                             "--error-rate", f"{error_rate:g}", "--error-seed", "1")
    try:
        stream = get_scene("surface").stream(4)
        with ollama.Client(host=url, timeout=10) as client:
            for _ in range(6):
                image, truth = stream.next_frame()
                ok, jpeg = cv2.imencode(".jpg", image)
                assert ok
                reply = client.chat(model="llava:7b", messages=[
                    {"role": "user", "content": "Is this part good?", "images": [jpeg.tobytes()]}])
                answer = json.loads(reply.message.content or "")
                right = "defect" if truth.defects else "pass"
                assert (answer["verdict"] == right) == (error_rate == 0.0), (answer, truth)
                if error_rate == 0.0 and truth.defects:
                    assert {d["type"] for d in answer["defects"]} == {d.label for d in truth.defects}
    finally:
        proc.communicate(input="", timeout=10)  # stdin closed: it stops; its pipes are read and closed
    assert proc.returncode == 0


def test_truth_options_without_a_scene_are_refused_by_name() -> None:
    done = subprocess.run([sys.executable, "-m", "tests.fakes.ollama", "--error-rate", "0.05"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--truth-seed and --error-rate need --truth-scene" in done.stderr, done.stderr
    done = subprocess.run([sys.executable, "-m", "tests.fakes.ollama", "--truth-scene", "surface"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--truth-scene needs --truth-seed" in done.stderr, done.stderr


def test_a_service_time_draws_each_answers_seconds_within_its_band_repeatably() -> None:
    # a 4 s server at 1/20: 0.1 to 0.3 s per answer (4 s * 0.5..1.5 * 0.05)
    draws = [ServiceTime(mean_s=4.0, scale=0.05, seed=3)() for _ in range(2)]
    assert draws[0] == draws[1]  # the same seed, the same times
    many = ServiceTime(mean_s=4.0, scale=0.05, seed=3)
    times = [many() for _ in range(400)]
    assert 0.1 <= min(times) < 0.12 and 0.28 < max(times) <= 0.3
    assert abs(sum(times) / len(times) - 0.2) < 0.01 and many.mean_scaled_s == pytest.approx(0.2)
    with pytest.raises(ValueError, match="mean_s > 0, scale > 0 and 0 <= spread < 1"):
        ServiceTime(mean_s=0.0)


def test_the_fake_answers_after_its_service_time(client: ollama.Client, fake_ollama: FakeOllama) -> None:
    fake_ollama.service_time = lambda: 0.3
    started = time.monotonic()
    client.chat(model="llava:7b", messages=USER)
    assert time.monotonic() - started >= 0.3
