"""The JSON body of a chat request to Ollama, written piece by piece so that no step holds the event loop.

A request near the gateway's limits (6 MiB of images) is 8 MiB of base64 in JSON. Made at once
(``base64.b64encode`` of each image, then ``json.dumps`` of the whole body, as the ``ollama`` client's
``chat()`` and httpx's ``json=`` do) it cost 25-75 ms of CPU in a single event-loop callback, during
which no other call and no health probe was served (``scripts/bench_loop_occupancy.py``).
:class:`ChatBody` gives the same bytes as an async iterator instead: the small JSON skeleton (texts,
schema, options) is encoded once, and each image's base64 is written in pieces of ``CHUNK_BYTES`` of
input (a fraction of a millisecond each), giving the loop back between pieces. Its length is known
beforehand, so the request carries a Content-Length, as one made at once would (no chunked encoding).

    body = ChatBody({"model": "llava:7b", "messages": [{"role": "user", "content": "...",
                                                        "images": [jpeg_bytes]}], "stream": False})
    await http.post("/api/chat", content=body.stream(), headers={"Content-Length": str(body.length)})
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Any

__all__ = ["CHUNK_BYTES", "ChatBody"]

CHUNK_BYTES = 3 * 64 * 1024
"""Image bytes base64-encoded per step (a multiple of 3, so that the pieces join into the whole encoding)."""


class ChatBody:
    """``body`` (a chat or generate request) as UTF-8 JSON; the ``images`` of each message are bytes,
    sent as base64 strings. ``length`` is the size of what :meth:`stream` yields."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        marker = f"edge-agent-image-{secrets.token_hex(12)}"
        self._images: list[bytes] = []
        skeleton = dict(body)
        if "messages" in body:
            skeleton["messages"] = [self._take_images(dict(m), marker) for m in body["messages"]]
        text = json.dumps(skeleton, separators=(",", ":"), allow_nan=False)
        self._parts: list[bytes] = []
        for k in range(len(self._images)):  # each image marker, in order, becomes the image's base64
            before, found, text = text.partition(f"{marker}-{k}")
            if not found:
                raise RuntimeError(f"image {k} of a chat request lost its place in the JSON body (a bug)")
            self._parts.append(before.encode("utf-8"))
        self._parts.append(text.encode("utf-8"))
        self.length = sum(map(len, self._parts)) + sum(4 * -(-len(image) // 3) for image in self._images)

    def _take_images(self, message: dict[str, Any], marker: str) -> dict[str, Any]:
        images = message.get("images")
        if images:
            markers = []
            for image in images:
                if not isinstance(image, (bytes, bytearray, memoryview)):
                    raise TypeError(f"a chat message's images must be bytes, not {type(image).__name__}")
                markers.append(f"{marker}-{len(self._images)}")
                self._images.append(bytes(image))
            message["images"] = markers
        return message

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, in pieces; the loop runs other callbacks between them."""
        yield self._parts[0]
        for image, after in zip(self._images, self._parts[1:], strict=True):
            view = memoryview(image)
            for start in range(0, len(view), CHUNK_BYTES):
                await asyncio.sleep(0)
                yield base64.b64encode(view[start:start + CHUNK_BYTES])
            yield after

    async def read(self) -> bytes:
        """The whole body at once (for tests and small bodies)."""
        return b"".join([piece async for piece in self.stream()])
