"""The gateway's event loop stays free while a request near the size limits goes to Ollama: the chat body
(8 MiB of base64 in JSON) is written in pieces, measured as the CPU of the loop's longest callback (which
a loaded machine does not change, unlike loop lag)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from agent.gateway.chatbody import CHUNK_BYTES, ChatBody
from agent.gateway.config import OllamaConfig
from agent.gateway.templates import Hint, get_template
from agent.gateway.vlm import OllamaVlm, VlmResult
from tests.escalation.loopcpu import LoopCpu
from tests.fakes.ollama import FakeOllama

MIB = 1024 * 1024


def big_images(count: int, size: int) -> list[bytes]:
    """Distinct incompressible-looking images of ``size`` bytes (the fake checks base64 only)."""
    return [bytes((i * 7 + k * 13 + (i >> 8)) & 0xFF for i in range(256)) * (size // 256) for k in range(count)]


def test_the_body_is_the_json_of_the_request_with_images_as_base64() -> None:
    images = [b"", b"a", b"ab", b"abc", bytes(range(256)) * 2000]  # lengths 0..3 mod 3, and over CHUNK_BYTES
    assert len(images[-1]) > CHUNK_BYTES
    body: dict[str, Any] = {"model": "llava:7b", "stream": False, "format": {"type": "object"}, "truncate": False,
            "messages": [{"role": "system", "content": "be terse \u00e9 \"quoted\""},
                         {"role": "user", "content": "look", "images": images},
                         {"role": "assistant", "content": "{}"}]}
    chat = ChatBody(body)
    data = asyncio.run(chat.read())
    assert len(data) == chat.length
    sent = json.loads(data)
    assert [base64.b64decode(i) for i in sent["messages"][1]["images"]] == images
    user = {**body["messages"][1], "images": [base64.b64encode(i).decode() for i in images]}
    assert sent == {**body, "messages": [body["messages"][0], user, body["messages"][2]]}


def test_the_body_comes_in_pieces_of_at_most_a_chunk_of_base64() -> None:
    chat = ChatBody({"messages": [{"role": "user", "content": "x", "images": big_images(2, 2 * MIB)}]})

    async def pieces() -> list[bytes]:
        return [piece async for piece in chat.stream()]

    sizes = [len(p) for p in asyncio.run(pieces())]
    assert max(sizes) <= 4 * CHUNK_BYTES // 3
    assert sum(sizes) == chat.length


def test_a_max_size_question_never_holds_the_loop_for_long(fake_ollama: FakeOllama) -> None:
    # a frame and 4 crops of 2 MiB (limits.max_image_bytes): 13 MiB of JSON. Built at once, its base64 and
    # json.dumps took 25-75 ms of the loop's CPU in one callback; in pieces the longest callback is ~1 ms
    images = big_images(5, 2 * MIB)
    prompt = get_template("inspect-v1").build(image=images[0], crops=[(i, Hint("hole", 0.3, None)) for i in images[1:]],
                                              detections=[], source_size=None, defect_classes=["scratch", "hole"])

    async def run() -> VlmResult:
        vlm = OllamaVlm.from_config(OllamaConfig(host=fake_ollama.url, num_ctx=32768))
        try:
            await vlm.ask(prompt, timeout=30)  # the first call also connects; the second is measured alone
            cpu.reset()
            return await vlm.ask(prompt, timeout=30)
        finally:
            await vlm.aclose()

    with LoopCpu(pause_gc=True) as cpu:
        result = asyncio.run(run())
    assert result.notes == ()  # every image was sent
    (_, chat) = fake_ollama.chat_requests()
    assert [base64.b64decode(i) for i in chat.body["messages"][1]["images"]] == images
    assert cpu.longest_ms < 10.0, f"the loop ran {cpu.longest_ms:.1f} ms of CPU in one callback: {cpu.longest_what}"
